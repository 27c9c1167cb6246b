// Interoperability of the mandate server with an independent JOSE
// implementation: the npm package jose (https://github.com/panva/jose).
//
// The test starts `$MANDATE_BIN serve` on a free port with a fresh data
// directory, registers an agent whose key jose generated (with the CLI), then
// gets mandates with jose-made client assertions (RFC 7523) and DPoP proofs
// (RFC 9449), verifies them with jose against the published JWKS, and checks
// that the server refuses what it must.
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
import {
  SignJWT,
  calculateJwkThumbprint,
  createRemoteJWKSet,
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
function startServer(dataDir) {
  const proc = spawn(BIN, ['serve', '--addr', '127.0.0.1:0', '--data', dataDir], {
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

  /** A client assertion (RFC 7523 §3) signed by key (default: the agent's). */
  const assertion = (opts = {}) => {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({})
      .setProtectedHeader({ alg: opts.alg ?? 'EdDSA' })
      .setIssuer(AGENT_ID)
      .setSubject(AGENT_ID)
      .setAudience(s.meta.token_endpoint)
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
    assert.equal(res.json.expires_in, 0, `a sub-second mandate has expires_in 0: ${show(res)}`);
    assert.equal(res.json.scope, SCOPE, show(res));
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const token = res.json.access_token;
    s.short = token;

    // The mandate lives 30 ms; iat and exp carry milliseconds
    // (1764412800.123). jose compares claims with the current time floored to
    // whole seconds, so the server issues nbf as iat floored to the second
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
    assert.equal(c.nbf, Math.floor(c.iat), `nbf must be iat floored to the second: ${raw}`);
    // Millisecond NumericDates. As doubles near 1.8e9 they are only exact to
    // ~2.4e-7 s, so exp - iat is compared with a tolerance of 1e-6, and the
    // exact difference from the JSON literals, in integer milliseconds.
    assert.ok(Math.abs(c.exp - c.iat - 0.03) < 1e-6, `exp - iat = ${c.exp - c.iat}, want 0.03: ${raw}`);
    assert.equal(numericDateMillis(raw, 'exp') - numericDateMillis(raw, 'iat'), 30n, raw);
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

    test('an HS256 assertion: 401 invalid_client', step(async () => {
      const secret = new TextEncoder().encode('a shared secret the server has never heard of!!');
      const res = await tokenRequest({ clientAssertion: await assertion({ alg: 'HS256', key: secret }), proof: await dpopProof(), ttlMs: 30 });
      assertOAuthError(res, 401, 'invalid_client', /HS256|alg/, 'HS256 assertion');
    }));
  });
});
