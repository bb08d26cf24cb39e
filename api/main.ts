// The API's composition root: the only place that reads the environment. It builds the
// clients, creates the topics and the bucket, serves the app, and shuts down on SIGTERM.
import { Command } from 'commander';
import { parseCommandLine } from '../common/cli.js';
import { ApiConfigSchema, loadConfig, readPepperFile } from '../common/config.js';
import { runMain, stopOnSignals } from '../common/signals.js';
import { createLogger } from '../common/logger.js';
import { readModelNames } from '../common/models.js';
import { createApp } from './app.js';
import { checkAuth } from './auth.js';
import { configureSharp } from './image.js';
import { requestIdMixin } from './requestid.js';
import { listen, shutdown } from './server.js';
import { createServices, prepareKafka, prepareStorage } from './services.js';

async function main(): Promise<void> {
  parseCommandLine(new Command('api').description('The img2img HTTP API; settings come from the environment (.env.example).'));
  const config = readPepperFile(loadConfig(process.env, ApiConfigSchema));
  const log = createLogger('api', config.LOG_LEVEL, requestIdMixin); // request_id on the lines of a request
  configureSharp();
  const services = createServices(config, await readModelNames(config.MODEL_NAMES_FILE), log);
  const { models } = services;
  await prepareStorage(services);
  await checkAuth(config, services.keys, log); // before anything listens: no keys, no exposed API
  await prepareKafka(services);
  const { server, url } = await listen(createApp(services), config.API_HOST, config.API_PORT, config);
  log.info({ models, url }, `API listening; the web page at ${url}/, Swagger UI at ${url}/docs`);

  stopOnSignals(log, 'shutting down', () => shutdown(server, services));
}

runMain(main);
