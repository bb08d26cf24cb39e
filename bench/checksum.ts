// CPU per object-store PUT body: the CRC32 the store checks (common/s3http.ts) against the
// SHA-256 a signed payload costs, same bodies, same run.
//   npx tsx bench/checksum.ts [--kib 600] [--rounds 400]
import { createHash } from 'node:crypto';
import { parseArgs } from 'node:util';
import { integrityHeaders } from '../common/s3http.js';

const { values } = parseArgs({ options: { kib: { type: 'string', default: '600' }, rounds: { type: 'string', default: '400' } } });
const body = Buffer.alloc(Number(values.kib) * 1024);
for (let i = 0; i < body.length; i++) body[i] = (i * 2654435761) >>> 24;
const rounds = Number(values.rounds);

function microsEach(work: () => unknown): number {
  const started = process.cpuUsage();
  for (let i = 0; i < rounds; i++) work();
  const used = process.cpuUsage(started);
  return (used.user + used.system) / rounds;
}

microsEach(() => integrityHeaders(body)); // warm-up
const crc = microsEach(() => integrityHeaders(body));
const sha = microsEach(() => createHash('sha256').update(body).digest('hex'));
console.log(`${values.kib} KiB body: CRC32 ${crc.toFixed(0)} us, SHA-256 ${sha.toFixed(0)} us of CPU (${(crc / sha).toFixed(2)}x)`);
