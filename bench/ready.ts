// Waiting for a service a benchmark started.

/** Resolves once `url` answers 2xx (polled every half second, two minutes at most). */
export async function waitHttp(url: string): Promise<void> {
  for (let i = 0; i < 240; i++) {
    if (await fetch(url).then((r) => r.ok, () => false)) return;
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`${url} never answered`);
}
