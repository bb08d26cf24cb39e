// A submission's deadlines. `start_by` (a field): the job must start by then, else it ends
// aborted without reaching a runner; seconds from acceptance, or an RFC 3339 time with its
// offset. `Cancel-After` (a header, as Replicate takes it): the whole job's time from acceptance;
// not started by then it ends aborted, still running it is canceled at its next step.
import toRegexRange from 'to-regex-range';
import type { JobRecord } from '../common/jobs.js';
import { Unprocessable, ValidationError } from './errors.js';

/** The furthest deadline taken: a week, longer than any job waits in a working queue. */
export const MAX_DEADLINE_S = 7 * 24 * 3600;
/** Seconds from acceptance (1 to MAX_DEADLINE_S), or an RFC 3339 time with its offset. */
export const START_BY_PATTERN = `^(${toRegexRange(1, MAX_DEADLINE_S)}|\\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\\d|3[01])T([01]\\d|2[0-3]):[0-5]\\d:[0-5]\\d(\\.\\d{1,9})?(Z|[+-]([01]\\d|2[0-3]):[0-5]\\d))$`;
/** A whole number of seconds, minutes or hours (seconds without a unit): 90, 90s, 5m, 1h. */
export const CANCEL_AFTER_PATTERN = '^\\d{1,6}[smh]?$';
const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600 };

function relative(field: string, seconds: number, now: Date): string {
  if (seconds < 1 || seconds > MAX_DEADLINE_S) throw new ValidationError(field, `${field}: must be 1 second to ${MAX_DEADLINE_S / 86400} days from now, got ${seconds} s`);
  return new Date(now.getTime() + seconds * 1000).toISOString();
}

function startBy(text: string, now: Date): string {
  if (/^\d+$/.test(text)) return relative('start_by', Number(text), now);
  const time = Date.parse(text);
  if (Number.isNaN(time)) throw new ValidationError('start_by', `start_by: ${text} is not a valid time`);
  const when = new Date(time).toISOString();
  if (time <= now.getTime()) throw new Unprocessable(`start_by: ${when} has passed already (now ${now.toISOString()})`, { code: 'deadline_passed', field: 'start_by' });
  if (time - now.getTime() > MAX_DEADLINE_S * 1000) throw new ValidationError('start_by', `start_by: ${when} is more than ${MAX_DEADLINE_S / 86400} days away`);
  return when;
}

function cancelAt(text: string, now: Date): string {
  const [, amount = '', unit = 's'] = /^(\d+)([smh]?)$/.exec(text) ?? [];
  return relative('Cancel-After', Number(amount) * UNIT_SECONDS[unit || 's']!, now);
}

/** The record's deadlines for what the request gave, taken at `now` (the acceptance); null for none. */
export function deadlinesOf(fields: { start_by?: string | undefined; cancelAfter?: string | undefined }, now: Date): JobRecord['deadlines'] {
  const start_by = fields.start_by === undefined ? null : startBy(fields.start_by, now);
  const cancel_at = fields.cancelAfter === undefined ? null : cancelAt(fields.cancelAfter, now);
  return start_by || cancel_at ? { start_by, cancel_at } : null;
}
