// Response headers for a service on the open network: security headers on every answer
// (hono/secure-headers), a Content-Security-Policy for each of the two HTML pages (the web page
// at / and Swagger UI at /docs), and CORS for browser clients on other origins, off unless
// CORS_ORIGINS lists some (hono/cors).
import type { MiddlewareHandler } from 'hono';
import { cors } from 'hono/cors';
import { secureHeaders } from 'hono/secure-headers';
import type { ApiConfig } from '../common/config.js';

/** JSON and images: nothing may load, and no page may frame them. */
const API_POLICY = { defaultSrc: ["'none'"], frameAncestors: ["'none'"], baseUri: ["'none'"], formAction: ["'none'"] };

/**
 * Swagger UI: its bundle, stylesheet and start-up script from this origin only (the API serves
 * them from swagger-ui-dist, so nothing loads from a CDN and the page works offline), the
 * document and "Try it out" requests to this origin, the icons its stylesheet inlines as data:
 * URLs, and the style attributes it sets; framed by no one.
 */
export const DOCS_POLICY = {
  ...API_POLICY,
  scriptSrc: ["'self'"],
  styleSrc: ["'self'", "'unsafe-inline'"],
  imgSrc: ["'self'", 'data:'],
  fontSrc: ["'self'", 'data:'],
  connectSrc: ["'self'"],
};

/**
 * The web page at /: its script and stylesheet from this origin, requests to this origin,
 * images from it (results), blob: (the chosen file's preview, a result fetched with a key)
 * and data: (the thumbnails it keeps in localStorage). No inline script or style at all.
 */
export const PAGE_POLICY = {
  ...API_POLICY,
  scriptSrc: ["'self'"],
  styleSrc: ["'self'"],
  imgSrc: ["'self'", 'blob:', 'data:'],
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

/** Gives a page its own Content-Security-Policy (securityHeaders keeps a header a route set). */
export function withPolicy(policy: Record<string, string[]>): MiddlewareHandler {
  const value = policyHeader(policy);
  return async (c, next) => {
    c.header('Content-Security-Policy', value);
    await next();
  };
}

/** CORS for the origins of CORS_ORIGINS (`*`: any); undefined when it lists none (CORS is off). */
export function corsFor(config: Pick<ApiConfig, 'CORS_ORIGINS'>): MiddlewareHandler | undefined {
  const origins = config.CORS_ORIGINS;
  if (!origins.length) return undefined;
  return cors({
    origin: origins.includes('*') ? '*' : origins,
    allowMethods: ['GET', 'HEAD', 'POST', 'DELETE'],
    allowHeaders: ['Content-Type', 'Idempotency-Key', 'If-None-Match', 'Last-Event-ID', 'X-Request-Id'],
    exposeHeaders: ['Location', 'Retry-After', 'ETag', 'X-Request-Id', 'RateLimit-Limit', 'RateLimit-Remaining', 'RateLimit-Reset'],
    maxAge: 600,
  });
}
