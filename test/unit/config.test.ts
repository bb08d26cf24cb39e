import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, KeysConfigSchema, loadConfig, readPepperFile } from '../../common/config.js';

describe('loadConfig', () => {
  it('fills defaults for an empty environment', () => {
    const config = loadConfig({});
    expect(config.KAFKA_BROKERS).toEqual(['127.0.0.1:9092']);
    expect(config.S3_BUCKET).toBe('img2img');
    expect(config.MAX_BODY_BYTES).toBe(20 * 1024 * 1024);
  });

  it('parses lists and numbers', () => {
    const config = loadConfig({ KAFKA_BROKERS: 'a:1, b:2', API_PORT: '8080' });
    expect(config.KAFKA_BROKERS).toEqual(['a:1', 'b:2']);
    expect(config.API_PORT).toBe(8080);
  });

  it('names every bad variable', () => {
    const bad = { API_PORT: 'eighty', S3_BUCKET: 'Bad_Bucket', S3_ENDPOINT: 'not a url' };
    expect(() => loadConfig(bad)).toThrow(ConfigError);
    const message = (() => {
      try {
        loadConfig(bad);
        return '';
      } catch (error) {
        return (error as Error).message;
      }
    })();
    for (const name of Object.keys(bad)) expect(message).toMatch(new RegExp(`^  ${name}: `, 'm'));
  });

  it('notices a dead consumer soon enough that its partitions move within 10 s (test/fault/consumer-kill measures it)', () => {
    expect(loadConfig({}).KAFKA_SESSION_TIMEOUT_MS).toBeLessThanOrEqual(8000);
  });

  it('treats an empty variable as unset', () => {
    expect(loadConfig({ API_PORT: '' }).API_PORT).toBe(8000);
  });
});

describe('readPepperFile', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pepper-'));
  const file = (name: string, text: string) => {
    writeFileSync(join(dir, name), text);
    return join(dir, name);
  };
  const failure = (config: { AUTH_PEPPER?: string; AUTH_PEPPER_FILE?: string }) => {
    try {
      readPepperFile(config);
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      return (error as Error).message;
    }
    throw new Error('readPepperFile accepted it');
  };

  it('reads the pepper from AUTH_PEPPER_FILE, without the trailing newline', () => {
    const config = readPepperFile(loadConfig({ AUTH_PEPPER_FILE: file('ok', `${'ab'.repeat(32)}\n`) }, KeysConfigSchema));
    expect(config.AUTH_PEPPER).toBe('ab'.repeat(32));
  });

  it('leaves AUTH_PEPPER alone when no file is named', () => {
    expect(readPepperFile({ AUTH_PEPPER: 'p'.repeat(16) }).AUTH_PEPPER).toBe('p'.repeat(16));
    expect(readPepperFile<{ AUTH_PEPPER?: string }>({}).AUTH_PEPPER).toBeUndefined();
  });

  it('refuses a missing file, a short pepper, and both variables, naming AUTH_PEPPER_FILE', () => {
    expect(failure({ AUTH_PEPPER_FILE: join(dir, 'absent') })).toMatch(/^ {2}AUTH_PEPPER_FILE: cannot read .*absent \(ENOENT\)$/m);
    expect(failure({ AUTH_PEPPER_FILE: file('short', 'tooshort\n') })).toMatch(/^ {2}AUTH_PEPPER_FILE: .* holds 8 characters; the pepper needs at least 16$/m);
    expect(failure({ AUTH_PEPPER: 'p'.repeat(16), AUTH_PEPPER_FILE: file('both', 'q'.repeat(16)) })).toMatch(/^ {2}AUTH_PEPPER_FILE: set AUTH_PEPPER or AUTH_PEPPER_FILE, not both$/m);
  });
});
