// Reading one job for a route: a malformed id, and another tenant's job, are answered like an
// unknown one (404), so clients need only one case and learn nothing about other tenants.
import { JOB_ID, type JobRecord } from '../common/jobs.js';
import type { ApiKey } from '../common/keys.js';
import type { RecordStore } from '../common/records.js';
import { seesAll } from './auth.js';
import { call } from './dependency.js';
import { NotFound } from './errors.js';

export const jobNotFound = (id: string) => new NotFound(`no job with id ${JSON.stringify(id.slice(0, 64))}`, { code: 'job_not_found' });

export function checkJobId(id: string): void {
  if (!JOB_ID.test(id)) throw jobNotFound(id);
}

/** Whether the caller may see this job: its own tenant's, or any with an admin key (or without keys). */
export const visibleTo = (record: JobRecord, principal: ApiKey | undefined) => seesAll(principal) || record.tenant === principal!.tenant;

export async function loadJob(records: RecordStore, id: string, deadline: AbortSignal, principal: ApiKey | undefined): Promise<JobRecord> {
  checkJobId(id);
  const record = await call('storage', (signal) => records.get(id, signal), deadline);
  if (!record || !visibleTo(record, principal)) throw jobNotFound(id);
  return record;
}
