// Debian's Chromium driven by puppeteer-core (no browser download), cut off from everything but
// loopback, with a record of every request each page makes and every error it logs.
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';

export const CHROMIUM = '/usr/bin/chromium';

/** Where screenshots go for a person to look at: TEST_OUTPUT_DIR, else test-results/ (ignored by git). */
export async function outputDir(name: string): Promise<string> {
  const dir = join(process.env.TEST_OUTPUT_DIR ?? 'test-results', name);
  await mkdir(dir, { recursive: true });
  return dir;
}

export function launchBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`Chromium is not installed at ${CHROMIUM}: run \`scripts/infra install debian\``);
  return puppeteer.launch({
    executablePath: CHROMIUM,
    args: [
      // Anything not on loopback goes to a proxy that is not there (port 9 is discard), so no
      // request can leave the machine even if a page tried; loopback bypasses proxies.
      '--proxy-server=http://127.0.0.1:9',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
      // Root (CI containers) cannot use Chromium's sandbox.
      ...(process.getuid?.() === 0 ? ['--no-sandbox'] : []),
    ],
  });
}

export interface Watch {
  /** Every URL a page of this browser asked for. */
  requests: string[];
  /** Console errors about the Content-Security-Policy, and uncaught exceptions. */
  problems: string[];
  /** Requests to anything but `origin` (data: and blob: URLs of the page itself are fine). */
  elsewhere(): string[];
}

/** Records what `page` requests and the problems it reports. */
export function watch(page: Page, origin: string, into?: Watch): Watch {
  const record: Watch = into ?? {
    requests: [],
    problems: [],
    elsewhere: () => record.requests.filter((url) => !url.startsWith('data:') && new URL(url.replace(/^blob:/, '')).origin !== origin),
  };
  page.on('request', (request) => record.requests.push(request.url()));
  page.on('console', (message) => {
    if (/Content[- ]Security[- ]Policy/i.test(message.text())) record.problems.push(message.text());
  });
  page.on('pageerror', (error) => record.problems.push(`uncaught: ${(error as Error).message}`));
  return record;
}

/** Presses Tab until the element matching `selector` has the focus (the page must be usable with keys alone). */
export async function tabTo(page: Page, selector: string, limit = 40): Promise<void> {
  for (let i = 0; i < limit; i++) {
    if (await page.$eval(selector, (element) => element === document.activeElement)) return;
    await page.keyboard.press('Tab');
  }
  throw new Error(`${selector} never got the focus within ${limit} presses of Tab`);
}
