// Reading one job for a route: a malformed id is answered like an unknown one (404), so
// clients need only one case, and no storage call is spent on it.
import { JOB_ID, type JobRecord } from '../common/jobs.js';
import type { RecordStore } from '../common/records.js';
import { call } from './dependency.js';
import { NotFound } from './errors.js';

export const jobNotFound = (id: string) => new NotFound(`no job with id ${JSON.stringify(id.slice(0, 64))}`, { code: 'job_not_found' });

export function checkJobId(id: string): void {
  if (!JOB_ID.test(id)) throw jobNotFound(id);
}

export async function loadJob(records: RecordStore, id: string, deadline: AbortSignal): Promise<JobRecord> {
  checkJobId(id);
  const record = await call('storage', (signal) => records.get(id, signal), deadline);
  if (!record) throw jobNotFound(id);
  return record;
}
