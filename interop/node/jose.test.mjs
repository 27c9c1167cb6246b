// Interoperability of the mandate server with an independent JOSE
// implementation: the npm package jose (https://github.com/panva/jose).
//
// The test starts `$MANDATE_BIN serve` on a free port with a fresh data
// directory, registers an agent whose key jose generated (with the CLI), then
// gets mandates with jose-made client assertions (RFC 7523) and DPoP proofs
// (RFC 9449), verifies them with jose against the published JWKS, delegates
// with a jose-made actor token (RFC 8693), and checks that the server refuses
// what it must: among it, every kind of JWT where another is expected, and
// the MCP SDK's untyped client assertions unless the server is told to take
// them (`serve --allow-untyped-client-assertions`).
//
//   go build -o /tmp/mandate ./cmd/mandate
//   (cd interop/node && npm ci)
//   MANDATE_BIN=/tmp/mandate node --test interop/node/

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { createPrivateKeyJwtAuth } from '@modelcontextprotocol/sdk/client/auth-extensions.js';
import {
  SignJWT,
  calculateJwkThumbprint,
  createRemoteJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  exportJWK,
  generateKeyPair,
  jwtVerify,
} from 'jose';

const BIN = process.env.MANDATE_BIN;
const AGENT = 'interop';
const AGENT_ID = `spiffe://example.org/agent/${AGENT}`;
const OWNER = 'alice@example.org';
const SCOPE = 'mcp:crm:list_customers';
const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const TOKEN_TYPE_JWT = 'urn:ietf:params:oauth:token-type:jwt';
// The typ of each kind of JWT (docs/tokens.md, "Token types").
const TYP_CLIENT_ASSERTION = 'client-authentication+jwt';
const TYP_ACTOR_TOKEN = 'vnd.mandatehq.actor+jwt';
const START_TIMEOUT_MS = 15_000;
const CLI_TIMEOUT_MS = 10_000;

// ---------------------------------------------------------------- helpers

/** Runs the mandate CLI; resolves to {code, stdout, stderr}, never rejects on exit status. */
function runCLI(args) {
  return new Promise((resolve, reject) => {
    execFile(BIN, args, { timeout: CLI_TIMEOUT_MS }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') {
        // Not an exit status: the binary could not run, or timed out.
        reject(new Error(`${BIN} ${args.join(' ')}: ${err.message}\nstderr: ${stderr}`));
        return;
      }
      resolve({ code: err ? err.code : 0, stdout, stderr });
    });
  });
}

/** Starts `mandate serve` and resolves to {proc, url, log} once it logs its URL. */
function startServer(dataDir, ...flags) {
  const proc = spawn(BIN, ['serve', '--addr', '127.0.0.1:0', '--data', dataDir, ...flags], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = { text: '' };
  proc.stdout.setEncoding('utf8').on('data', (s) => { log.text += s; });
  proc.stderr.setEncoding('utf8');
  return new Promise((resolve, reject) => {
    const fail = (why) => {
      clearTimeout(timer);
      proc.kill('SIGKILL');
      reject(new Error(`mandate serve: ${why}\n--- server output so far ---\n${log.text || '(none)'}`));
    };
    const timer = setTimeout(() => fail(`no "mandate serving ... url=" line within ${START_TIMEOUT_MS} ms`), START_TIMEOUT_MS);
    const onError = (err) => fail(`cannot start ${BIN}: ${err.message}`);
    const onExit = (code, signal) => fail(`exited early (code ${code}, signal ${signal})`);
    proc.once('error', onError);
    proc.once('exit', onExit);
    let started = false;
    proc.stderr.on('data', (s) => {
      log.text += s; // kept for the report of a failed run
      if (started) return;
      // slog text format: time=... level=INFO msg="mandate serving" url=http://127.0.0.1:PORT ...
      const line = log.text.split('\n').find((l) => l.includes('msg="mandate serving"'));
      const m = line && /\burl=(http:\/\/127\.0\.0\.1:\d+)/.exec(line);
      if (m) {
        started = true;
        clearTimeout(timer);
        proc.off('error', onError);
        proc.off('exit', onExit);
        resolve({ proc, url: m[1], log });
      }
    });
  });
}

/** Stops the server with SIGTERM (SIGKILL after 10 s); resolves when it has exited. */
async function stopServer(proc) {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  proc.kill('SIGTERM');
  const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(t);
}

/** POSTs a form; resolves to {status, headers, text, json}. */
async function postForm(url, params, headers = {}) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(params),
  });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, headers: res.headers, text, json };
}

/** "HTTP 401 {...}": for assertion messages. */
const show = (res) => `HTTP ${res.status} ${res.text}`;

/** Decodes a JWT payload as JSON text (not parsed), to see the exact NumericDate literals. */
const rawPayload = (jwt) => Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8');

/** The millisecond count of a NumericDate literal in raw JSON, e.g. "exp":1764412800.030 → 1764412800030n. */
function numericDateMillis(raw, claim) {
  const m = new RegExp(`"${claim}":(\\d+)(?:\\.(\\d{1,3}))?[,}]`).exec(raw);
  assert.ok(m, `${claim} is not a NumericDate with at most millisecond precision in ${raw}`);
  return BigInt(m[1]) * 1000n + BigInt((m[2] ?? '').padEnd(3, '0'));
}

// ---------------------------------------------------------------- the tests

describe('mandate ↔ jose interop', { timeout: 30_000 }, () => {
  const s = {}; // shared state, filled by before() and the tests in order
  let failed = false;
  // Wraps a test body so that a failure prints the server's log at the end.
  const step = (fn) => async (t) => {
    try { await fn(t); } catch (err) { failed = true; throw err; }
  };

  before(async () => {
    try {
      await setUp();
    } catch (err) {
      failed = true;
      throw err;
    }
  });

  async function setUp() {
    assert.ok(BIN, 'MANDATE_BIN must name the mandate binary: go build -o /tmp/mandate ./cmd/mandate && MANDATE_BIN=/tmp/mandate node --test interop/node/');
    s.root = await mkdtemp(join(tmpdir(), 'mandate-interop-'));
    s.dataDir = join(s.root, 'data');
    s.server = await startServer(s.dataDir);
    s.url = s.server.url;

    // The agent's key, made by jose. RFC 8037 EdDSA with Ed25519.
    const { publicKey, privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
    s.privateKey = privateKey;
    s.publicJwk = await exportJWK(publicKey); // {kty: 'OKP', crv: 'Ed25519', x}
    s.jkt = await calculateJwkThumbprint(s.publicJwk, 'sha256');
    const pubFile = join(s.root, `${AGENT}.pub.jwk`);
    await writeFile(pubFile, JSON.stringify(s.publicJwk) + '\n');

    // Registered with the CLI, which reads the admin credential from --data.
    const add = await runCLI(['agent', 'add', AGENT, '--owner', OWNER, '--ceiling', 'mcp:crm:*',
      '--pubkey', pubFile, '--server', s.url, '--data', s.dataDir]);
    assert.equal(add.code, 0, `mandate agent add exited ${add.code}\nstdout: ${add.stdout}\nstderr: ${add.stderr}`);
    assert.match(add.stdout, new RegExp(`registered ${AGENT_ID.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`),
      `unexpected output of mandate agent add: ${add.stdout}`);

    s.adminToken = (await readFile(join(s.dataDir, 'admin.token'), 'utf8')).trim();
  }

  after(async () => {
    if (s.server) await stopServer(s.server.proc);
    if (failed && s.server) {
      console.error(`--- mandate server log ---\n${s.server.log.text}--- end of server log ---`);
    }
    if (s.root) await rm(s.root, { recursive: true, force: true });
  });

  /**
   * A client assertion (RFC 7523 §3) signed by key (default: the agent's),
   * typ client-authentication+jwt (draft-ietf-oauth-rfc7523bis §4) unless
   * opts.typ says otherwise (null: no typ), aud the issuer identifier (as
   * that draft requires of a typed one) unless opts.aud.
   */
  const assertion = (opts = {}) => {
    const now = Math.floor(Date.now() / 1000);
    const typ = opts.typ === undefined ? TYP_CLIENT_ASSERTION : opts.typ;
    return new SignJWT({})
      .setProtectedHeader({ alg: opts.alg ?? 'EdDSA', ...(typ === null ? {} : { typ }) })
      .setIssuer(AGENT_ID)
      .setSubject(AGENT_ID)
      .setAudience(opts.aud ?? s.meta.issuer)
      .setJti(randomUUID())
      .setIssuedAt(now)
      .setExpirationTime(now + 60)
      .sign(opts.key ?? s.privateKey);
  };

  /** A DPoP proof (RFC 9449 §4.2) for POST htu, by the agent's key. */
  const dpopProof = (htu = s.meta.token_endpoint, alg = 'EdDSA') =>
    new SignJWT({ htm: 'POST', htu })
      .setProtectedHeader({ typ: 'dpop+jwt', alg, jwk: s.publicJwk })
      .setIssuedAt() // now, in whole seconds
      .setJti(randomUUID())
      .sign(s.privateKey);

  /**
   * An actor token (RFC 8693 §2.1) for a delegation from the mandate whose
   * jti is par: of the registered agent (iss = sub) by default, or of a new
   * ephemeral agent whose public JWK is opts.jwk (signed by opts.key).
   */
  const actorToken = (par, opts = {}) => {
    const now = Math.floor(Date.now() / 1000);
    const jwt = new SignJWT(par === undefined ? {} : { par })
      .setProtectedHeader({ alg: 'EdDSA', typ: opts.typ ?? TYP_ACTOR_TOKEN, ...(opts.jwk ? { jwk: opts.jwk } : {}) })
      .setAudience(s.meta.issuer)
      .setJti(randomUUID())
      .setIssuedAt(now)
      .setExpirationTime(now + 60);
    if (!opts.jwk) jwt.setIssuer(AGENT_ID).setSubject(AGENT_ID);
    return jwt.sign(opts.key ?? s.privateKey);
  };

  const tokenRequest = async ({ clientAssertion, proof, ttlMs }) => {
    const headers = proof ? { DPoP: proof } : {};
    return postForm(s.meta.token_endpoint, {
      grant_type: 'client_credentials',
      client_assertion_type: ASSERTION_TYPE,
      client_assertion: clientAssertion,
      scope: SCOPE,
      ttl_ms: String(ttlMs),
    }, headers);
  };

  const introspect = (token) => postForm(`${s.url}/oauth2/introspect`, { token },
    { Authorization: `Bearer ${s.adminToken}` });

  /**
   * Asserts an RFC 6749 §5.2 error response. why, a loose pattern on
   * error_description, makes sure that the request was refused for the
   * reason under test and not for another one.
   */
  const assertOAuthError = (res, status, error, why, what) => {
    assert.equal(res.status, status, `${what}: want HTTP ${status} ${error}, got ${show(res)}`);
    assert.equal(res.json?.error, error, `${what}: want error ${error}, got ${show(res)}`);
    assert.match(res.json?.error_description ?? '', why, `${what}: refused for another reason? ${show(res)}`);
  };

  test('RFC 8414 metadata', step(async () => {
    const res = await fetch(`${s.url}/.well-known/oauth-authorization-server`);
    const text = await res.text();
    assert.equal(res.status, 200, `metadata: HTTP ${res.status} ${text}`);
    s.meta = JSON.parse(text);
    assert.equal(s.meta.issuer, s.url, `issuer in ${text}`);
    assert.equal(s.meta.token_endpoint, `${s.url}/oauth2/token`, `token_endpoint in ${text}`);
    assert.equal(s.meta.jwks_uri, `${s.url}/.well-known/jwks.json`, `jwks_uri in ${text}`);
    assert.ok(s.meta.token_endpoint_auth_methods_supported?.includes('private_key_jwt'), text);
    assert.ok(s.meta.dpop_signing_alg_values_supported?.includes('EdDSA'), text);
    s.jwks = createRemoteJWKSet(new URL(s.meta.jwks_uri));
  }));

  test('a 30 ms DPoP-bound mandate, verified by jose', step(async (t) => {
    assert.ok(s.meta, 'needs the metadata of the previous test');
    s.assertion = await assertion();
    const res = await tokenRequest({ clientAssertion: s.assertion, proof: await dpopProof(), ttlMs: 30 });
    assert.equal(res.status, 200, `token request: ${show(res)}`);
    assert.equal(res.json.token_type, 'DPoP', show(res));
    assert.equal(res.json.expires_in_ms, 30, show(res));
    assert.equal(res.json.expires_in, 1, `expires_in is rounded up, never 0 for a live mandate: ${show(res)}`);
    assert.equal(res.json.scope, SCOPE, show(res));
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const token = res.json.access_token;
    s.short = token;

    // The mandate lives 30 ms; exp carries milliseconds (1764412800.123).
    // jose compares claims with the current time floored to whole seconds,
    // so the server issues iat and nbf as the issuance floored to the second
    // (docs/tokens.md): then jose accepts a fresh mandate with no clock
    // tolerance at all. Verify at the iat instant, so that the 30 ms lifetime
    // does not race the test; expiry to the millisecond is checked by the
    // server below (introspection and `mandate verify`).
    const iatMs = Number(numericDateMillis(rawPayload(token), 'iat'));
    let verified;
    try {
      verified = await jwtVerify(token, s.jwks, {
        issuer: s.meta.issuer, audience: 'mcp:crm', algorithms: ['EdDSA'], typ: 'at+jwt',
        currentDate: new Date(iatMs),
      });
    } catch (err) {
      assert.fail(`jose refused the mandate: ${err.code}: ${err.message}\npayload: ${rawPayload(token)}\nheader: ${JSON.stringify(decodeProtectedHeader(token))}`);
    }
    const { payload: c, protectedHeader: h } = verified;
    const raw = rawPayload(token);
    assert.equal(h.alg, 'EdDSA', JSON.stringify(h));
    assert.equal(h.typ, 'at+jwt', JSON.stringify(h));
    assert.equal(typeof h.kid, 'string', `header has no kid: ${JSON.stringify(h)}`);
    assert.ok(h.kid.length > 0, JSON.stringify(h));
    assert.equal(c.iss, s.meta.issuer, raw);
    assert.equal(c.sub, `user:${OWNER}`, raw);
    assert.equal(c.client_id, AGENT_ID, raw);
    assert.deepEqual(c.act, { sub: AGENT_ID }, raw);
    assert.deepEqual([c.aud].flat(), ['mcp:crm'], raw);
    assert.equal(c.scope, SCOPE, raw);
    assert.match(c.jti, /^m_[0-9A-Z]{26}$/, raw);
    assert.match(c.task, /^t_[0-9A-Z]{26}$/, raw);
    assert.equal(c.cnf?.jkt, s.jkt, `cnf.jkt must be jose's RFC 7638 thumbprint of the DPoP key: ${raw}`);
    assert.ok(Number.isInteger(c.iat), `iat must be whole seconds: ${raw}`);
    assert.equal(c.nbf, c.iat, `nbf must be iat: ${raw}`);
    // exp is 30 ms after the exact issuance, which iat rounds down: exp -
    // iat is 30 ms to 1,029 ms, read exactly from the JSON literals.
    const life = numericDateMillis(raw, 'exp') - numericDateMillis(raw, 'iat');
    assert.ok(life >= 30n && life < 1030n, `exp - iat = ${life} ms: ${raw}`);
    // What jose enforces of the 30 ms, by an injected clock: it floors the
    // current time, so it accepts the mandate after exp until the next whole
    // second (docs/tokens.md, Lifetimes), and refuses it from then on.
    const expMs = Number(numericDateMillis(raw, 'exp'));
    const nextSecond = Math.floor(expMs / 1000) * 1000 + 1000;
    const opts = { issuer: s.meta.issuer, audience: 'mcp:crm', algorithms: ['EdDSA'], typ: 'at+jwt' };
    if (expMs % 1000 !== 0) {
      await jwtVerify(token, s.jwks, { ...opts, currentDate: new Date(nextSecond - 1) });
    }
    await assert.rejects(jwtVerify(token, s.jwks, { ...opts, currentDate: new Date(nextSecond) }), { code: 'ERR_JWT_EXPIRED' });
    s.shortClaims = c;

    // The kid is the RFC 7638 thumbprint of a key in the JWKS (docs/tokens.md).
    const jwks = await (await fetch(s.meta.jwks_uri)).json();
    const key = jwks.keys.find((k) => k.kid === h.kid);
    assert.ok(key, `kid ${h.kid} is not in the JWKS ${JSON.stringify(jwks)}`);
    assert.equal(await calculateJwkThumbprint(key), h.kid, `kid is not the thumbprint of ${JSON.stringify(key)}`);
  }));

  test('expires to the millisecond: introspection and `mandate verify`', step(async () => {
    assert.ok(s.shortClaims, 'needs the mandate of the previous test');
    const expMs = Number(numericDateMillis(rawPayload(s.short), 'exp'));
    while (Date.now() <= expMs + 1) await sleep(Math.max(1, expMs + 2 - Date.now()));

    const res = await introspect(s.short);
    assert.equal(res.status, 200, `introspect: ${show(res)}`);
    assert.deepEqual(res.json, { active: false }, `an expired mandate must introspect inactive: ${show(res)}`);

    const v = await runCLI(['verify', s.short, '--server', s.url]);
    assert.notEqual(v.code, 0, `mandate verify accepted an expired mandate:\nstdout: ${v.stdout}\nstderr: ${v.stderr}`);
    assert.match(v.stderr, /mandate expired/, `mandate verify exited ${v.code} without "mandate expired":\nstdout: ${v.stdout}\nstderr: ${v.stderr}`);
  }));

  test('a 60 s mandate introspects active, DPoP-bound to the jose key', step(async () => {
    assert.ok(s.meta, 'needs the metadata');
    // jose v6's preferred, fully-specified alg name (RFC 9864) is accepted too.
    const res = await tokenRequest({
      clientAssertion: await assertion({ alg: 'Ed25519' }), proof: await dpopProof(undefined, 'Ed25519'), ttlMs: 60_000,
    });
    assert.equal(res.status, 200, `token request: ${show(res)}`);
    assert.equal(res.json.token_type, 'DPoP', show(res));
    assert.equal(res.json.expires_in_ms, 60_000, show(res));
    assert.equal(res.json.expires_in, 60, show(res));
    const token = res.json.access_token;

    const { payload: c } = await jwtVerify(token, s.jwks, {
      issuer: s.meta.issuer, audience: 'mcp:crm', algorithms: ['EdDSA'], typ: 'at+jwt',
    });

    const ir = await introspect(token);
    assert.equal(ir.status, 200, `introspect: ${show(ir)}`);
    assert.equal(ir.json.active, true, `introspect: ${show(ir)}`);
    assert.equal(ir.json.token_type, 'DPoP', show(ir));
    assert.equal(ir.json.cnf?.jkt, s.jkt, show(ir));
    assert.equal(ir.json.client_id, AGENT_ID, show(ir));
    assert.equal(ir.json.sub, `user:${OWNER}`, show(ir));
    assert.equal(ir.json.jti, c.jti, show(ir));
    // RFC 7662 §2.2: integer times (exp rounded down); exp_ms is exact.
    assert.equal(ir.json.exp, Math.floor(c.exp), show(ir));
    assert.equal(BigInt(ir.json.exp_ms), numericDateMillis(rawPayload(token), 'exp'), show(ir));
    assert.equal(ir.json.scope, SCOPE, show(ir));
  }));

  test('a delegation with a jose-made actor token of an ephemeral agent', step(async () => {
    assert.ok(s.meta, 'needs the metadata');
    const parent = await tokenRequest({ clientAssertion: await assertion(), ttlMs: 60_000 });
    assert.equal(parent.status, 200, `parent: ${show(parent)}`);
    const parentJti = decodeJwt(parent.json.access_token).jti;
    const sub = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
    const subJwk = await exportJWK(sub.publicKey);
    const exchange = async (at) => postForm(s.meta.token_endpoint, {
      grant_type: TOKEN_EXCHANGE,
      subject_token: parent.json.access_token, subject_token_type: TOKEN_TYPE_JWT,
      actor_token: at, actor_token_type: TOKEN_TYPE_JWT,
    });
    // Without par, or for another parent, an actor token is refused.
    assertOAuthError(await exchange(await actorToken(undefined, { jwk: subJwk, key: sub.privateKey })), 400, 'invalid_grant', /par/, 'actor token without par');
    assertOAuthError(await exchange(await actorToken('m_another', { jwk: subJwk, key: sub.privateKey })), 400, 'invalid_grant', /par/, 'actor token for another parent');
    // Untyped (as it was before actor tokens had a typ), it is refused.
    assertOAuthError(await exchange(await actorToken(parentJti, { jwk: subJwk, key: sub.privateKey, typ: 'JWT' })), 400, 'invalid_grant', /typ/, 'untyped actor token');
    const res = await exchange(await actorToken(parentJti, { jwk: subJwk, key: sub.privateKey }));
    assert.equal(res.status, 200, `exchange: ${show(res)}`);
    const c = decodeJwt(res.json.access_token);
    assert.equal(c.par, parentJti, JSON.stringify(c));
    assert.match(c.client_id, new RegExp(`^${AGENT_ID.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/sub/[0-9a-f]{12}$`), JSON.stringify(c));
  }));

  describe('refusals of jose-made inputs', () => {
    test('a replayed client assertion: 401 invalid_client', step(async () => {
      assert.ok(s.assertion, 'needs the assertion used for the 30 ms mandate');
      // A fresh proof, so that only the assertion is replayed.
      const res = await tokenRequest({ clientAssertion: s.assertion, proof: await dpopProof(), ttlMs: 30 });
      assertOAuthError(res, 401, 'invalid_client', /used before|replay/i, 'replayed assertion');
    }));

    test('a DPoP proof for another URL: 400 invalid_dpop_proof', step(async () => {
      const clientAssertion = await assertion();
      const res = await tokenRequest({ clientAssertion, proof: await dpopProof(`${s.url}/oauth2/other`), ttlMs: 30 });
      assertOAuthError(res, 400, 'invalid_dpop_proof', /htu/, 'proof with another htu');
      // The refusal did not use up the assertion (the replay check comes last).
      const ok = await tokenRequest({ clientAssertion, proof: await dpopProof(), ttlMs: 30 });
      assert.equal(ok.status, 200, `the assertion of a request refused for its proof must still be usable: ${show(ok)}`);
    }));

    test('an assertion signed by another key: 401 invalid_client', step(async () => {
      const other = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
      const res = await tokenRequest({ clientAssertion: await assertion({ key: other.privateKey }), proof: await dpopProof(), ttlMs: 30 });
      assertOAuthError(res, 401, 'invalid_client', /signature/i, 'assertion signed by an unregistered key');
    }));

    test('a typed client assertion for the token endpoint, not the issuer: 401 invalid_client', step(async () => {
      // draft-ietf-oauth-rfc7523bis: a typed assertion names the issuer
      // identifier alone (no audience injection through endpoint URLs).
      const res = await tokenRequest({ clientAssertion: await assertion({ aud: s.meta.token_endpoint }), ttlMs: 30 });
      assertOAuthError(res, 401, 'invalid_client', /issuer identifier/, 'typed assertion for the token endpoint');
    }));

    test('an untyped client assertion, or typ JWT: 401 invalid_client', step(async () => {
      for (const typ of [null, 'JWT']) {
        const res = await tokenRequest({ clientAssertion: await assertion({ typ }), ttlMs: 30 });
        assertOAuthError(res, 401, 'invalid_client', /typ/, `client assertion with typ ${typ}`);
      }
    }));

    test('the MCP SDK\'s private_key_jwt assertion (typ JWT): 401 invalid_client', step(async () => {
      const params = await sdkAssertion(s);
      params.set('scope', SCOPE);
      const res = await postForm(s.meta.token_endpoint, Object.fromEntries(params));
      assertOAuthError(res, 401, 'invalid_client', /is "JWT" .*untyped/, 'the SDK\'s assertion');
    }));

    test('an actor token as a client assertion: 401 invalid_client', step(async () => {
      // What a sub-agent hands the agent delegating to it, posted as its
      // client assertion: it would buy a root mandate in its name.
      const res = await tokenRequest({ clientAssertion: await actorToken('m_any'), ttlMs: 30 });
      assertOAuthError(res, 401, 'invalid_client', /an actor token is not a client assertion/, 'actor token as client assertion');
      const rv = await postForm(`${s.url}/oauth2/revoke`, {
        token: 'x', client_assertion_type: ASSERTION_TYPE, client_assertion: await actorToken('m_any'),
      });
      assertOAuthError(rv, 401, 'invalid_client', /an actor token is not a client assertion/, 'actor token at the revocation endpoint');
    }));

    test('a client assertion as a DPoP proof, a DPoP proof as a client assertion', step(async () => {
      assertOAuthError(await tokenRequest({ clientAssertion: await assertion(), proof: await assertion(), ttlMs: 30 }),
        400, 'invalid_dpop_proof', /typ/, 'client assertion as DPoP proof');
      assertOAuthError(await tokenRequest({ clientAssertion: await dpopProof(), ttlMs: 30 }),
        401, 'invalid_client', /a DPoP proof is not a client assertion/, 'DPoP proof as client assertion');
    }));

    test('an HS256 assertion: 401 invalid_client', step(async () => {
      const secret = new TextEncoder().encode('a shared secret the server has never heard of!!');
      const res = await tokenRequest({ clientAssertion: await assertion({ alg: 'HS256', key: secret }), proof: await dpopProof(), ttlMs: 30 });
      assertOAuthError(res, 401, 'invalid_client', /HS256|alg/, 'HS256 assertion');
    }));
  });
});

/**
 * The form parameters of client authentication by the MCP TypeScript SDK's
 * createPrivateKeyJwtAuth, as its PrivateKeyJwtProvider makes them: typ
 * JWT, aud the issuer (from the metadata), a jti of its own. st holds the
 * agent's private key and the server's metadata.
 */
async function sdkAssertion(st) {
  const addAuth = createPrivateKeyJwtAuth({
    issuer: AGENT_ID, subject: AGENT_ID, privateKey: await exportJWK(st.privateKey), alg: 'EdDSA',
  });
  const params = new URLSearchParams({ grant_type: 'client_credentials' });
  await addAuth(new Headers(), params, st.meta.token_endpoint, st.meta);
  return params;
}

describe('serve --allow-untyped-client-assertions and the MCP SDK', { timeout: 30_000 }, () => {
  const s = {};
  before(async () => {
    s.root = await mkdtemp(join(tmpdir(), 'mandate-interop-untyped-'));
    s.dataDir = join(s.root, 'data');
    s.server = await startServer(s.dataDir, '--allow-untyped-client-assertions');
    const { publicKey, privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
    s.privateKey = privateKey;
    const pubFile = join(s.root, 'agent.pub.jwk');
    await writeFile(pubFile, JSON.stringify(await exportJWK(publicKey)) + '\n');
    const add = await runCLI(['agent', 'add', AGENT, '--owner', OWNER, '--ceiling', 'mcp:crm:*',
      '--pubkey', pubFile, '--server', s.server.url, '--data', s.dataDir]);
    assert.equal(add.code, 0, `mandate agent add: ${add.stderr}`);
    s.meta = await (await fetch(`${s.server.url}/.well-known/oauth-authorization-server`)).json();
  });
  after(async () => {
    if (s.server) await stopServer(s.server.proc);
    if (s.root) await rm(s.root, { recursive: true, force: true });
  });

  test('the SDK\'s private_key_jwt assertion gets a mandate; other kinds are still refused', async () => {
    const params = await sdkAssertion(s);
    params.set('scope', SCOPE);
    const res = await postForm(s.meta.token_endpoint, Object.fromEntries(params));
    assert.equal(res.status, 200, `the SDK's assertion: ${show(res)}`);
    // Replayed: refused, as any client assertion.
    const again = await postForm(s.meta.token_endpoint, Object.fromEntries(params));
    assert.equal(again.status, 401, `the SDK's assertion, replayed: ${show(again)}`);
    // An untyped JWT is taken for a client assertion; a typed actor token is not.
    const now = Math.floor(Date.now() / 1000);
    const at = await new SignJWT({ par: 'm_any' })
      .setProtectedHeader({ alg: 'EdDSA', typ: TYP_ACTOR_TOKEN })
      .setIssuer(AGENT_ID).setSubject(AGENT_ID).setAudience(s.meta.issuer)
      .setJti(randomUUID()).setIssuedAt(now).setExpirationTime(now + 60)
      .sign(s.privateKey);
    const actor = await postForm(s.meta.token_endpoint, {
      grant_type: 'client_credentials', client_assertion_type: ASSERTION_TYPE, client_assertion: at, scope: SCOPE,
    });
    assert.equal(actor.status, 401, `an actor token as client assertion: ${show(actor)}`);
    assert.match(actor.json?.error_description ?? '', /an actor token is not a client assertion/, show(actor));
  });
});
