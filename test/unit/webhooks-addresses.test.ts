// The SSRF checks, without sending a packet: addresses are judged as literals, and names through
// the connection's lookup with a stubbed resolver, called directly (no socket is opened).
import type { LookupAddress } from 'node:dns';
import { describe, expect, it } from 'vitest';
import { addressProblem, urlProblem } from '../../common/addresses.js';
import { BlockedTarget, guardedLookup, type Resolver } from '../../dispatcher/client.js';

const REFUSED = ['10.0.0.1', '192.168.1.1', '172.16.5.4', '100.64.0.1', '169.254.169.254', 'fd00::1', 'fd00:ec2::254', 'fe80::1',
  '127.0.0.1', '127.8.9.10', '::1', '0.0.0.0', '224.0.0.1', 'ff02::1', '255.255.255.255', '::ffff:10.0.0.1', '::ffff:169.254.169.254'];
const PUBLIC = ['93.184.215.14', '8.8.8.8', '2606:4700::1111'];
/** What WEBHOOK_ALLOW_PRIVATE opens; the rest stays refused. */
const OPENED = ['10.0.0.1', '192.168.1.1', '172.16.5.4', 'fd00::1', '127.0.0.1', '127.8.9.10', '::1', '::ffff:10.0.0.1'];

/** Runs the lookup the client gives net.connect, as net.connect would, and returns what it answered. */
function lookup(resolve: Resolver, allowPrivate: boolean, options: { all?: boolean; family?: number } = { all: true }) {
  return new Promise<{ error: Error | null; addresses: string | LookupAddress[] }>((done) =>
    guardedLookup(resolve, allowPrivate)('hooks.example', options as never, (error, addresses) => done({ error, addresses })),
  );
}
const resolvesTo = (...addresses: string[]): Resolver => async () => addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));

describe('addressProblem', () => {
  it.each(REFUSED)('refuses %s', (address) => {
    expect(addressProblem(address, false)).toMatch(/not a public address|metadata/);
  });

  it.each(PUBLIC)('allows the public address %s', (address) => {
    expect(addressProblem(address, false)).toBeUndefined();
  });

  it('with WEBHOOK_ALLOW_PRIVATE, opens loopback and private ranges only: never link-local, metadata, CGNAT or multicast', () => {
    for (const address of REFUSED) {
      if (OPENED.includes(address)) expect(addressProblem(address, true), address).toBeUndefined();
      else expect(addressProblem(address, true), address).toBeDefined();
    }
    expect(REFUSED.filter((address) => !OPENED.includes(address))).toEqual(expect.arrayContaining(['169.254.169.254', 'fd00:ec2::254', '100.64.0.1', 'fe80::1', '224.0.0.1', '0.0.0.0']));
  });
});

describe('urlProblem', () => {
  it('refuses other schemes, credentials, and loopback however it is written', () => {
    expect(urlProblem('ftp://example.com/x', false)).toMatch(/only http and https/);
    expect(urlProblem('file:///etc/passwd', false)).toMatch(/only http and https/);
    expect(urlProblem('https://user:secret@example.com/', false)).toMatch(/user name or password/);
    for (const url of ['http://127.0.0.1:9/', 'http://[::1]:9/', 'http://2130706433/', 'http://0x7f.1/', 'http://localhost:9/', 'http://api.localhost./', 'http://[::ffff:127.0.0.1]/']) {
      expect(urlProblem(url, false), url).toMatch(/loopback/);
    }
    expect(urlProblem('http://169.254.169.254/latest/meta-data/', true)).toMatch(/link-local/);
  });

  it('refuses IPv4-compatible IPv6 (::/96), which carries an IPv4 address past the range check, with or without WEBHOOK_ALLOW_PRIVATE', () => {
    for (const url of ['http://[::127.0.0.1]/', 'http://[::a9fe:a9fe]/', 'http://[::10.0.0.1]/', 'http://[::8.8.8.8]/']) {
      for (const allowPrivate of [false, true]) expect(urlProblem(url, allowPrivate), url).toMatch(/IPv4-compatible/);
    }
    expect(urlProblem('http://[::1]:9/', true)).toBeUndefined();
  });

  it('lets names through to the connect-time check', () => {
    expect(urlProblem('https://hooks.example.com/img2img', false)).toBeUndefined();
  });
});

describe('the connection lookup', () => {
  it.each(REFUSED)('refuses a name that resolves to %s', async (address) => {
    const { error } = await lookup(resolvesTo(address), false);
    expect(error).toBeInstanceOf(BlockedTarget);
    expect(error!.message).toContain(`hooks.example: ${address}`);
  });

  it('refuses a name when any one of its addresses is refused, as a rebinding name would answer', async () => {
    const { error } = await lookup(resolvesTo('93.184.215.14', '10.0.0.1'), false);
    expect(error).toBeInstanceOf(BlockedTarget);
  });

  it('answers every address of a public name, in the form net.connect asked for', async () => {
    expect((await lookup(resolvesTo('93.184.215.14', '2606:4700::1111'), false)).addresses).toEqual([
      { address: '93.184.215.14', family: 4 },
      { address: '2606:4700::1111', family: 6 },
    ]);
    const one = await new Promise<unknown[]>((done) =>
      guardedLookup(resolvesTo('93.184.215.14'), false)('hooks.example', { family: 4 } as never, (...args) => done(args)),
    );
    expect(one).toEqual([null, '93.184.215.14', 4]);
  });

  it('lets loopback through only with WEBHOOK_ALLOW_PRIVATE', async () => {
    expect((await lookup(resolvesTo('127.0.0.1'), true)).error).toBeNull();
    expect((await lookup(resolvesTo('127.0.0.1'), false)).error).toBeInstanceOf(BlockedTarget);
  });

  it('passes a resolver failure on as it is (retried later, unlike a refused address)', async () => {
    const failing: Resolver = async () => {
      throw Object.assign(new Error('getaddrinfo ENOTFOUND hooks.example'), { code: 'ENOTFOUND' });
    };
    const { error } = await lookup(failing, false);
    expect(error).not.toBeInstanceOf(BlockedTarget);
    expect((error as NodeJS.ErrnoException).code).toBe('ENOTFOUND');
  });
});
