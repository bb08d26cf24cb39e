// Webhook signing secrets (whsec_...), per tenant, or the deployment's own for jobs submitted
// without API keys. Rotation keeps two valid at once: every delivery is signed with both until
// the old one is dropped, so receivers switch without missing a delivery. Reads .env like
// `npm start` does.
//   npm run webhooks -- show-secrets [--tenant acme]
//   npm run webhooks -- rotate-secret [--tenant acme]
//   npm run webhooks -- drop-old-secrets [--tenant acme]
import { existsSync } from 'node:fs';
import { oneLineErrors } from '../common/cli.js';
import { Command, InvalidArgumentError } from 'commander';
import { ConfigError, DispatcherConfigSchema, loadConfig } from '../common/config.js';
import { TENANT } from '../common/keys.js';
import { ObjectStore } from '../common/storage.js';
import { TenantStore } from '../common/tenants.js';

function tenantStore(): TenantStore {
  if (existsSync('.env')) process.loadEnvFile('.env'); // what is already set wins
  return new TenantStore(new ObjectStore(loadConfig(process.env, DispatcherConfigSchema)));
}

const tenantOption = (text: string) => {
  if (!TENANT.test(text)) throw new InvalidArgumentError('a tenant is 1-64 of a-z 0-9 . _ - starting with a letter or digit');
  return text;
};

const whose = (tenant: string | undefined) => (tenant ? `tenant ${tenant}` : 'jobs submitted without API keys');
const print = (secrets: string[]) => secrets.forEach((secret, index) => console.log(`${secret}\t${index === 0 ? 'newest' : 'previous, still valid'}`));

export function program(): Command {
  const command = new Command('webhooks').description('webhook signing secrets').configureOutput(oneLineErrors('webhooks')).exitOverride();
  const withTenant = (sub: Command) => sub.option('--tenant <tenant>', 'the tenant; without it, the secrets of jobs submitted without API keys', tenantOption);
  withTenant(command.command('show-secrets'))
    .description('the secrets that sign webhooks now, newest first (one is made if there is none)')
    .action(async (options: { tenant?: string }) => {
      console.log(`# secrets of ${whose(options.tenant)}`);
      print(await tenantStore().webhookSecrets(options.tenant ?? null));
    });
  withTenant(command.command('rotate-secret'))
    .description('make a new secret; the newest old one stays valid beside it until drop-old-secrets')
    .action(async (options: { tenant?: string }) => {
      const settings = await tenantStore().rotateSecret(options.tenant ?? null);
      console.log(`# secrets of ${whose(options.tenant)}: webhooks are signed with each of them from the next attempt on`);
      print(settings.webhook_secrets);
    });
  withTenant(command.command('drop-old-secrets'))
    .description('keep only the newest secret, once every receiver verifies with it')
    .action(async (options: { tenant?: string }) => {
      const settings = await tenantStore().dropOldSecrets(options.tenant ?? null);
      console.log(`# secrets of ${whose(options.tenant)}`);
      print(settings.webhook_secrets);
    });
  return command;
}

try {
  await program().parseAsync(process.argv);
} catch (error) {
  if ((error as { code?: string }).code?.startsWith('commander.')) process.exitCode = (error as { exitCode?: number }).exitCode ? 2 : 0;
  else {
    console.error(error instanceof ConfigError ? `webhooks: ${error.message}` : error);
    process.exitCode = 1;
  }
}
