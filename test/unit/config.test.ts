import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../common/config.js';

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
