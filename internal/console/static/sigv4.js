// AWS Signature Version 4 for the console's API calls, with WebCrypto.
//
// Only host and x-amz-date are signed: the browser sets or may rewrite
// every other header it sends (Content-Type charset, Accept-Encoding,
// Content-Length), and a signed header that changes on the way breaks the
// signature. The server hashes the body itself, so no
// x-amz-content-sha256 header is needed either.

const algorithm = 'AWS4-HMAC-SHA256';
const encoder = new TextEncoder();

// Service is the SigV4 signing name of both AgentCore planes.
export const service = 'bedrock-agentcore';

// defaultRegion is the credential scope's region unless one is chosen.
export const defaultRegion = 'us-east-1';

// sign returns the headers that sign a request: Authorization and
// X-Amz-Date, to add to the request's own.
//   req:   { method, url, body } — url absolute or relative to location;
//          body a string, Uint8Array, ArrayBuffer or absent.
//   creds: { accessKeyId, secretAccessKey, region }
//   opts:  { date, host } — the signing time (default now) and the Host
//          the browser will send (default location.host).
export async function sign(req, creds, { date = new Date(), host = location.host } = {}) {
  if (!globalThis.crypto?.subtle) {
    throw new Error('signing requests needs WebCrypto, which the browser offers only over HTTPS or on localhost');
  }
  if (!creds?.accessKeyId || !creds?.secretAccessKey) {
    throw new Error('signing requests needs an access key ID and a secret access key');
  }
  const url = new URL(req.url, location.href);
  const amzDate = date.toISOString().replace(/[-:]/g, '').replace(/\.\d+/, '');
  const day = amzDate.slice(0, 8);
  const region = creds.region || defaultRegion;
  const scope = `${day}/${region}/${service}/aws4_request`;
  const signed = 'host;x-amz-date';

  const canonical = [
    (req.method || 'GET').toUpperCase(),
    canonicalPath(url.pathname),
    canonicalQuery(url.searchParams),
    `host:${host}`,
    `x-amz-date:${amzDate}`,
    '',
    signed,
    hex(await crypto.subtle.digest('SHA-256', bodyBytes(req.body))),
  ].join('\n');
  const toSign = [algorithm, amzDate, scope, hex(await crypto.subtle.digest('SHA-256', encoder.encode(canonical)))].join('\n');

  let key = encoder.encode('AWS4' + creds.secretAccessKey);
  for (const part of [day, region, service, 'aws4_request', toSign]) key = await hmac(key, part);
  return {
    Authorization: `${algorithm} Credential=${creds.accessKeyId}/${scope}, SignedHeaders=${signed}, Signature=${hex(key)}`,
    'X-Amz-Date': amzDate,
  };
}

// escape percent-encodes every byte of s's UTF-8 but SigV4's unreserved
// characters (encodeURIComponent also spares !'()*).
export function escape(s) {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
}

// canonicalPath encodes the already-escaped path once more, segment by
// segment: the rule for every AWS service but S3.
function canonicalPath(path) {
  return path ? path.split('/').map(escape).join('/') : '/';
}

// canonicalQuery sorts the decoded parameters by name, then value, as the
// server does, and encodes them.
function canonicalQuery(params) {
  const pairs = [...params].sort(([ak, av], [bk, bv]) => (ak < bk ? -1 : ak > bk ? 1 : av < bv ? -1 : av > bv ? 1 : 0));
  return pairs.map(([k, v]) => escape(k) + '=' + escape(v)).join('&');
}

function bodyBytes(body) {
  if (body == null) return new Uint8Array();
  if (typeof body === 'string') return encoder.encode(body);
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  throw new TypeError(`cannot sign a request body of type ${body?.constructor?.name ?? typeof body}: use a string or bytes`);
}

async function hmac(key, data) {
  const k = await crypto.subtle.importKey('raw', key, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  return new Uint8Array(await crypto.subtle.sign('HMAC', k, encoder.encode(data)));
}

function hex(buf) {
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, '0')).join('');
}
