// Response headers for a service on the open network: security headers on every answer
// (hono/secure-headers), a Content-Security-Policy for the one HTML page (Swagger UI at /docs),
// and CORS for browser clients on other origins, off unless CORS_ORIGINS lists some (hono/cors).
import { createHash } from 'node:crypto';
import { SwaggerUI } from '@hono/swagger-ui';
import type { MiddlewareHandler } from 'hono';
import { cors } from 'hono/cors';
import { secureHeaders } from 'hono/secure-headers';
import type { ApiConfig } from '../common/config.js';

/**
 * Where Swagger UI's script and stylesheet come from today (@hono/swagger-ui's default CDN,
 * named here so that the page and its policy cannot disagree). When the page serves them
 * itself, this becomes 'self'.
 */
const SWAGGER_CDN = 'https://cdn.jsdelivr.net';
export const DOCS_OPTIONS = { url: '/openapi.json', title: 'img2img API', baseUrl: `${SWAGGER_CDN}/npm`, validatorUrl: 'none' };

/** The page's one inline script (it starts Swagger UI), allowed by its hash rather than by 'unsafe-inline'. */
const inlineScriptHashes = (html: string) =>
  [...html.matchAll(/<script>([\s\S]*?)<\/script>/g)].map(([, body]) => `'sha256-${createHash('sha256').update(body!).digest('base64')}'`);

/** JSON and images: nothing may load, and no page may frame them. */
const API_POLICY = { defaultSrc: ["'none'"], frameAncestors: ["'none'"], baseUri: ["'none'"], formAction: ["'none'"] };

/**
 * Swagger UI: its bundle and stylesheet from the CDN, its inline start-up script by hash, the
 * document and "Try it out" requests to this origin, the icons its stylesheet inlines as data:
 * URLs, and style attributes it sets; framed by no one.
 */
export const DOCS_POLICY = {
  ...API_POLICY,
  scriptSrc: [SWAGGER_CDN, ...inlineScriptHashes(SwaggerUI(DOCS_OPTIONS))],
  styleSrc: [SWAGGER_CDN, "'unsafe-inline'"],
  imgSrc: ["'self'", 'data:'],
  fontSrc: [SWAGGER_CDN, 'data:'],
  connectSrc: ["'self'"],
};

/**
 * Security headers on every answer: nosniff, a CSP that forbids framing, no Referer sent from
 * our pages, and the isolation headers of hono's defaults. Strict-Transport-Security is left to
 * the TLS proxy in front (the API itself speaks plain HTTP). A route that sets its own header
 * (the /docs page's CSP) keeps it.
 */
export const securityHeaders = (): MiddlewareHandler =>
  secureHeaders({
    contentSecurityPolicy: API_POLICY,
    referrerPolicy: 'no-referrer',
    xFrameOptions: 'DENY',
    strictTransportSecurity: false,
    overwrite: false,
  });

/** The Content-Security-Policy header value of a policy, as secureHeaders writes it. */
export const policyHeader = (policy: Record<string, string[]>) =>
  Object.entries(policy)
    .map(([directive, sources]) => `${directive.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} ${sources.join(' ')}`)
    .join('; ');

/** CORS for the origins of CORS_ORIGINS (`*`: any); undefined when it lists none (CORS is off). */
export function corsFor(config: Pick<ApiConfig, 'CORS_ORIGINS'>): MiddlewareHandler | undefined {
  const origins = config.CORS_ORIGINS;
  if (!origins.length) return undefined;
  return cors({
    origin: origins.includes('*') ? '*' : origins,
    allowMethods: ['GET', 'HEAD', 'POST', 'DELETE'],
    allowHeaders: ['Content-Type', 'Idempotency-Key', 'If-None-Match', 'Last-Event-ID'],
    exposeHeaders: ['Location', 'Retry-After', 'ETag'],
    maxAge: 600,
  });
}
