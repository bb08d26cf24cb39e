// Test configuration: the real servers of scripts/infra, with names no other test uses.
import { randomBytes } from 'node:crypto';
import { loadConfig, type Config } from '../../common/config.js';

export const uniqueName = (label: string) => `t-${label}-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;

export function testConfig(overrides: Record<string, string> = {}): Config {
  return loadConfig({ ...process.env, TOPIC_PREFIX: uniqueName('topics'), LOG_LEVEL: 'silent', ...overrides });
}
