// Which network addresses a webhook may reach. A webhook URL is the client's to choose, so
// without this check a job could make the dispatcher POST to the cloud metadata service, a
// database's HTTP port or anything else inside the network (server-side request forgery).
// Only public unicast addresses pass. WEBHOOK_ALLOW_PRIVATE opens loopback and the private
// ranges (tests, receivers inside the deployment); link-local, the metadata addresses, CGNAT,
// multicast and the reserved ranges stay shut whatever the setting.
import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';

/** The ranges WEBHOOK_ALLOW_PRIVATE opens (ipaddr.js range names). */
const PRIVATE_RANGES: ReadonlySet<string> = new Set(['loopback', 'private', 'uniqueLocal']);
/** Metadata services inside an otherwise allowed range (AWS' IPv6 one is in fc00::/7). */
const METADATA = new Set(['fd00:ec2::254']);

const NAMES: Record<string, string> = {
  carrierGradeNat: 'carrier-grade NAT, 100.64.0.0/10',
  linkLocal: 'link-local, where the cloud metadata address is',
  uniqueLocal: 'unique-local, fc00::/7',
  private: 'private',
  rfc6052: 'NAT64',
};

/** Why `address` (an IPv4 or IPv6 literal) may not be reached; undefined when it may. */
export function addressProblem(address: string, allowPrivate: boolean): string | undefined {
  if (!isIP(address)) return `${address} is not an IP address`;
  // process() reads ::ffff:10.0.0.1 as the IPv4 address it carries.
  const ip = ipaddr.process(address);
  // ::/96 other than :: and ::1 is IPv4-compatible IPv6 (deprecated by RFC 4291): ipaddr.js calls
  // ::a9fe:a9fe unicast, yet it names 169.254.169.254. Nothing legitimate is addressed so.
  if (ip.kind() === 'ipv6' && (ip as ipaddr.IPv6).parts.slice(0, 6).every((part) => part === 0) && !['::', '::1'].includes(ip.toString())) {
    return `${address} is an IPv4-compatible IPv6 address (deprecated ::/96), not a public address`;
  }
  const range = ip.range();
  if (range === 'unicast') return undefined;
  if (METADATA.has(ip.toString())) return `${address} is a cloud metadata address`;
  if (allowPrivate && PRIVATE_RANGES.has(range)) return undefined;
  const hint = PRIVATE_RANGES.has(range) ? '; allowed only with WEBHOOK_ALLOW_PRIVATE=1' : '';
  return `${address} is not a public address (${NAMES[range] ?? range}${hint})`;
}

/** Names that resolve to loopback by definition (RFC 6761); refused before any lookup. */
const isLocalName = (host: string) => host === 'localhost' || host.endsWith('.localhost');

/**
 * Why a webhook may not be sent to `url` before any name is resolved: the scheme, credentials,
 * an address written in the URL. A name is checked again, address by address, when it is
 * resolved for the connection (dispatcher/client.ts), since DNS can answer differently then.
 */
export function urlProblem(url: string, allowPrivate: boolean): string | undefined {
  let target: URL;
  try {
    target = new URL(url);
  } catch {
    return 'not an absolute URL';
  }
  if (target.protocol !== 'http:' && target.protocol !== 'https:') return `${target.protocol} is not allowed: only http and https`;
  if (target.username || target.password) return 'a user name or password in the URL is not allowed';
  // WHATWG URL parsing already turned 0x7f.1, 2130706433 and the like into 127.0.0.1.
  const host = target.hostname.replace(/^\[(.*)\]$/, '$1').replace(/\.$/, '');
  if (isIP(host)) return addressProblem(host, allowPrivate);
  if (!allowPrivate && isLocalName(host.toLowerCase())) return `${host} is a loopback name (allowed only with WEBHOOK_ALLOW_PRIVATE=1)`;
  return undefined;
}
