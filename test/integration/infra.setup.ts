import { execFileSync } from 'node:child_process';

export default function setup(): void {
  execFileSync('bash', ['scripts/infra', 'up', 'kafka', 'minio', 'redis'], { stdio: 'inherit' });
}
