// The public JSON of a job: the record minus storage internals, plus absolute links.
import type { JobRecord } from '../common/jobs.js';
import type { JobView } from './schemas.js';

export const jobLinks = (base: string, id: string) => ({
  status_url: `${base}/api/jobs/${id}`,
  result_url: `${base}/api/results/${id}`,
  events_url: `${base}/api/jobs/${id}/events`,
});

export function jobView(record: JobRecord, base: string): JobView {
  const { id, status, model_name, priority, params, width, height, progress, timings, error } = record;
  const { created_at, started_at, finished_at, attempts, cancel_requested } = record;
  return {
    id,
    status,
    model_name,
    priority,
    params,
    width,
    height,
    progress: status === 'running' ? progress : null,
    timings,
    error,
    created_at,
    started_at,
    finished_at,
    attempts,
    cancel_requested,
    worker: record.worker ?? null,
    verification: record.verification ?? null,
    ...jobLinks(base, id),
  };
}

export function acceptedView(record: JobRecord, base: string) {
  const { id, status, model_name, priority } = record;
  return { id, status, model_name, priority, ...jobLinks(base, id) };
}
