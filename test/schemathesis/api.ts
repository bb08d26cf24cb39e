// The API for scripts/schemathesis, started the way the integration tests start it: in-process
// on 127.0.0.1 and a free port, against the real Kafka and MinIO, with topic names of its own.
// Prints its URL on the first line of stdout; on SIGTERM it stops and deletes its topics.
import { startTestApi } from '../helpers/api.js';

const api = await startTestApi();
process.stdout.write(`${api.url}\n`);
process.once('SIGTERM', () => {
  void api.close().finally(() => process.exit(0));
});
