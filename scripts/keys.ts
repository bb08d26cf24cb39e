// API keys: create (the secret is printed once), list, revoke. They live in the object store,
// so every API replica sees a change within seconds. Reads .env like `npm start` does.
//   npm run keys -- init [--tenant admin] [--name first-admin]   (a first start: the pepper file and an admin key)
//   npm run keys -- create --tenant acme --name ci-bot [--rate 600/min] [--concurrency 32] [--cost 500/min] [--admin]
//   npm run keys -- list
//   npm run keys -- revoke <key id>
//   npm run keys -- retention --tenant acme --days 30   (or --default)
import { existsSync, writeFileSync } from 'node:fs';
import { oneLineErrors } from '../common/cli.js';
import { Command, InvalidArgumentError } from 'commander';
import { ConfigError, KeysConfigSchema, loadConfig, readPepperFile, type KeysConfig } from '../common/config.js';
import { KeyStore, newPepper, parseCost, parseRate, TENANT, type ApiKey } from '../common/keys.js';
import { urlProblem } from '../common/addresses.js';
import { ObjectStore } from '../common/storage.js';
import { TenantStore } from '../common/tenants.js';
import { DEFAULT_WEBHOOK_EVENTS } from '../common/webhooks.js';

function keysConfig(): KeysConfig {
  if (existsSync('.env')) process.loadEnvFile('.env'); // what is already set wins
  return loadConfig(process.env, KeysConfigSchema);
}

async function objectStore(config = readPepperFile(keysConfig())): Promise<{ store: ObjectStore; pepper: string | undefined }> {
  const store = new ObjectStore(config);
  await store.ensureBucket(); // keys may come before the API first starts
  return { store, pepper: config.AUTH_PEPPER };
}

async function keyStore(): Promise<KeyStore> {
  const { store, pepper } = await objectStore();
  if (!pepper) throw new ConfigError('AUTH_PEPPER is not set: the API and this tool need the same one (see .env.example)');
  return new KeyStore(store, pepper);
}

const option = <T>(parse: (text: string) => T) => (text: string) => {
  try {
    return parse(text);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
};

const tenantOption = option((text) => {
  if (!TENANT.test(text)) throw new Error('a tenant is 1-64 of a-z 0-9 . _ - starting with a letter or digit');
  return text;
});

const printToken = (key: ApiKey, token: string) => {
  console.log(describe(key));
  console.log(`\n${token}\n\nKeep it now: only its hash is stored. Send it as  Authorization: Bearer ${token}`);
};

/**
 * A first start (the Docker path's `init` service): with AUTH_PEPPER_FILE naming a file that does
 * not exist, makes a pepper and writes it there; then, when no key exists or the pepper is new,
 * creates an admin key and prints it. Run again, it changes nothing. The file is written after the
 * key, so an interrupted run leaves no pepper without a key that uses it.
 */
async function init(options: { tenant: string; name: string }): Promise<void> {
  const config = keysConfig();
  const path = config.AUTH_PEPPER_FILE;
  const fresh = path !== undefined && !config.AUTH_PEPPER && !existsSync(path);
  const { store, pepper } = await objectStore(fresh ? { ...config, AUTH_PEPPER: newPepper() } : readPepperFile(config));
  if (!pepper) throw new ConfigError('set AUTH_PEPPER_FILE (where init keeps the pepper it makes) or AUTH_PEPPER (see .env.example)');
  const keys = new KeyStore(store, pepper);
  const existing = await keys.any();
  if (!fresh && existing) {
    console.log(`keys: the pepper${path ? ` (${path})` : ''} and API keys exist; nothing to do. More keys: \`keys create --tenant <t> --name <n>\`.`);
    return;
  }
  const { key, token } = await keys.create({
    tenant: options.tenant,
    name: options.name,
    role: 'admin',
    limits: { rate: null, concurrency: null, cost: null },
    webhook: null,
  });
  if (fresh) {
    writeFileSync(path, `${pepper}\n`, { flag: 'wx', mode: 0o600 });
    console.log(`keys: a new pepper in ${path}`);
    if (existing) console.log('keys: keys made with an earlier pepper no longer verify; revoke them with `keys revoke <id>`');
  }
  console.log('keys: the first admin key (it sees and cancels every tenant’s jobs, and can read /metrics):');
  printToken(key, token);
}

const describe = (key: ApiKey) =>
  [
    key.id,
    key.tenant,
    key.name,
    key.role,
    key.limits.rate ? `${key.limits.rate.points}/${key.limits.rate.per_seconds}s` : 'no rate limit',
    key.limits.concurrency ? `${key.limits.concurrency} at once` : 'no concurrency limit',
    key.limits.cost ? `${key.limits.cost.megapixel_steps} megapixel-steps/${key.limits.cost.per_seconds}s` : 'no cost limit',
    key.revoked_at ? `REVOKED ${key.revoked_at}` : `created ${key.created_at}`,
  ].join('\t');

export function program(): Command {
  const command = new Command('keys').description('API keys of the img2img API').configureOutput(oneLineErrors('keys')).exitOverride();
  command
    .command('create')
    .description('create a key; its secret is shown once')
    .requiredOption('--tenant <tenant>', 'the tenant the key acts for', tenantOption)
    .requiredOption('--name <name>', 'what the key is for, e.g. ci-bot')
    .option('--rate <rate>', 'submissions allowed, e.g. 600/min, 10/s', option(parseRate))
    .option('--concurrency <n>', 'jobs queued or running at once', option((text) => {
      const value = Number(text);
      if (!Number.isInteger(value) || value < 1) throw new Error('must be an integer of at least 1');
      return value;
    }))
    .option('--cost <budget>', 'compute allowed in megapixel-steps (width x height x denoising steps / 10^6), e.g. 500/min', option(parseCost))
    .option('--admin', 'sees and cancels every tenant’s jobs', false)
    .option('--webhook-url <url>', 'where this key’s jobs send webhooks when a submission names none', option((text) => {
      // The API refuses the same addresses at every submission; better to hear it now.
      const problem = urlProblem(text, process.env.WEBHOOK_ALLOW_PRIVATE === '1');
      if (problem) throw new Error(problem);
      return text;
    }))
    .action(async (options: { tenant: string; name: string; rate?: ApiKey['limits']['rate']; concurrency?: number; cost?: ApiKey['limits']['cost']; admin: boolean; webhookUrl?: string }) => {
      const { key, token } = await (await keyStore()).create({
        tenant: options.tenant,
        name: options.name,
        role: options.admin ? 'admin' : 'user',
        limits: { rate: options.rate ?? null, concurrency: options.concurrency ?? null, cost: options.cost ?? null },
        webhook: options.webhookUrl ? { url: options.webhookUrl, events: [...DEFAULT_WEBHOOK_EVENTS] } : null,
      });
      printToken(key, token);
    });
  command
    .command('init')
    .description('a first start: the pepper file AUTH_PEPPER_FILE names (made if missing) and an admin key when none exists; prints that key once')
    .option('--tenant <tenant>', 'the admin key’s tenant', tenantOption, 'admin')
    .option('--name <name>', 'the admin key’s name', 'first-admin')
    .action(init);
  command
    .command('list')
    .description('every key, revoked ones included (never their secrets)')
    .action(async () => {
      for (const key of await (await keyStore()).list()) console.log(describe(key));
    });
  command
    .command('revoke <id>')
    .description('revoke a key; every API replica refuses it within seconds')
    .action(async (id: string) => {
      if (!(await (await keyStore()).revoke(id))) {
        console.error(`keys: no key with id ${id}`);
        process.exitCode = 1;
        return;
      }
      console.log(`revoked ${id}`);
    });
  command
    .command('retention')
    .description('how many days a tenant’s jobs are kept, instead of RETENTION_DAYS (applies within a sweep)')
    .requiredOption('--tenant <tenant>', 'the tenant')
    .option('--days <n>', 'days, fractions allowed', option((text) => {
      const value = Number(text);
      if (!(value > 0)) throw new Error('must be a number of days above 0');
      return value;
    }))
    .option('--default', 'keep its jobs as long as RETENTION_DAYS says', false)
    .action(async (options: { tenant: string; days?: number; default: boolean }) => {
      if ((options.days === undefined) === !options.default) throw new InvalidArgumentError('give --days <n> or --default');
      const settings = await new TenantStore((await objectStore()).store).setRetention(options.tenant, options.default ? undefined : options.days);
      console.log(`${options.tenant}: ${settings.retention_days ? `${settings.retention_days} days` : 'RETENTION_DAYS'}`);
    });
  return command;
}

try {
  await program().parseAsync(process.argv);
} catch (error) {
  if ((error as { code?: string }).code?.startsWith('commander.')) process.exitCode = (error as { exitCode?: number }).exitCode || 0 ? 2 : 0;
  else {
    console.error(error instanceof ConfigError ? `keys: ${error.message}` : error);
    process.exitCode = 1;
  }
}
