// One process's death is not an outage: under a steady stream of jobs, each of the API, the
// consumer and the dispatcher is killed with SIGKILL in turn. The supervisor (scripts/start's)
// starts it again; the others keep answering meanwhile, and every accepted job succeeds once.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKafka } from '../../common/kafka.js';
import { RecordStore } from '../../common/records.js';
import { ObjectStore } from '../../common/storage.js';
import { pngImage, postJob } from '../helpers/api.js';
import { waitFor } from '../helpers/consumer.js';
import { testConfig, uniqueName } from '../helpers/env.js';
import { countOf, followEvents, report, sleep } from '../helpers/faults.js';
import { answers, ChildService, childPids, freePort, modelNamesFile } from '../helpers/processes.js';
import type { JobRecord } from '../../common/jobs.js';

let supervisor: ChildService;
let url: string;
const ready: Record<string, string> = {};
const config = testConfig({ TOPIC_PREFIX: uniqueName('supervised') });

beforeAll(async () => {
  const [apiPort, consumerPort, dispatcherPort] = [await freePort(), await freePort(), await freePort()];
  url = `http://127.0.0.1:${apiPort}`;
  // What each process serves once it is up: its readiness signal.
  ready.api = `${url}/readyz`;
  ready.consumer = `http://127.0.0.1:${consumerPort}/metrics`;
  ready.dispatcher = `http://127.0.0.1:${dispatcherPort}/metrics`;
  supervisor = new ChildService('supervisor', process.execPath, ['--import', 'tsx', 'scripts/supervisor.ts'], {
    env: {
      TOPIC_PREFIX: config.TOPIC_PREFIX,
      API_PORT: String(apiPort),
      CONSUMER_METRICS_PORT: String(consumerPort),
      DISPATCHER_METRICS_PORT: String(dispatcherPort),
      MODEL_NAMES_FILE: modelNamesFile(),
      LOG_LEVEL: 'warn',
    },
  });
  for (const [name, readyUrl] of Object.entries(ready)) await supervisor.until(() => answers(readyUrl), 60_000, `the ${name} to answer`);
}, 120_000);

afterAll(async () => {
  await supervisor?.stop('SIGTERM', 20_000);
});

/** The pid of the supervisor's child running `name` (api, consumer, dispatcher), if one runs. */
function pidOf(name: string): number | undefined {
  return childPids(supervisor.child.pid!, `${name}/main.ts`)[0];
}

describe('each process killed under load', () => {
  it('is started again within 10 s while the others keep answering; nothing accepted is lost or run twice', async () => {
    const events = await followEvents(createKafka(config, uniqueName('supervised')), config);
    const image = await pngImage(64, 48);
    const ids: string[] = [];
    let submitted = 0;
    let refused = 0;
    let sending = true;
    const load = (async () => {
      while (sending) {
        submitted++;
        const response = await postJob(url, { image, query: { model_name: 'tiny', prompt: 'load', steps: '4', seed: String(submitted) } }).catch(() => undefined);
        if (response?.status === 202) ids.push(((await response.json()) as { id: string }).id);
        else refused++;
        await sleep(250);
      }
    })();

    const back: Record<string, number> = {};
    const refusedWhileDown: Record<string, number> = {};
    for (const name of ['consumer', 'dispatcher', 'api']) {
      await sleep(3000);
      const pid = pidOf(name)!;
      const refusedBefore = refused;
      const killed = Date.now();
      process.kill(pid, 'SIGKILL');
      await waitFor(async () => (pidOf(name) && pidOf(name) !== pid ? true : undefined), 15_000, `${name} to be started again`);
      await supervisor.until(() => answers(ready[name]!), 15_000, `the ${name} to answer again`);
      back[name] = Date.now() - killed;
      refusedWhileDown[name] = refused - refusedBefore;
    }
    await sleep(3000);
    sending = false;
    await load;

    const records = new RecordStore(new ObjectStore(config));
    const ended: (JobRecord | undefined)[] = await Promise.all(
      ids.map((id) => waitFor(async () => {
        const record = await records.get(id);
        return record && ['succeeded', 'failed', 'canceled'].includes(record.status) ? record : undefined;
      }, 120_000, `job ${id} to end`).catch(() => undefined)),
    );
    await sleep(1000);
    await events.stop();
    const count = countOf(submitted, ended, events.events);
    report('each process killed under load', count, {
      refused: refused,
      back_ms: JSON.stringify(back),
      refused_while_down: JSON.stringify(refusedWhileDown),
    });
    for (const name of ['consumer', 'dispatcher', 'api']) expect(back[name], name).toBeLessThan(10_000);
    // The API answered every submission while the consumer and the dispatcher were away.
    expect(refusedWhileDown).toMatchObject({ consumer: 0, dispatcher: 0 });
    expect(count).toMatchObject({ lost: 0, duplicated: 0, failed: 0 });
    expect(count.succeeded).toBe(ids.length);
    expect(supervisor.alive).toBe(true);
  }, 300_000);
});
