import { pino, type Logger } from 'pino';

export type { Logger };

/** `mixin` adds fields to every line (the API's request id). */
export function createLogger(name: string, level: string, mixin?: () => Record<string, unknown>): Logger {
  return pino({ name, level, ...(mixin ? { mixin } : {}) });
}
