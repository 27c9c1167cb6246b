// Interoperability of the MCP gateway with the official TypeScript SDK
// (npm @modelcontextprotocol/sdk) as the client, and with the reference
// server @modelcontextprotocol/server-everything as the upstream, run by
// the gateway as a stdio server and reached as a Streamable HTTP server.
//
// The test starts server-everything in HTTP mode on a free port, then
// `$MANDATE_BIN serve` with both routes, registers an agent and gets a
// mandate with the CLI, and has the TypeScript client list tools, call
// one, and see a call outside its mandate come back as a JSON-RPC error.
//
//   go build -o /tmp/mandate ./cmd/mandate
//   (cd interop/node && npm ci)
//   MANDATE_BIN=/tmp/mandate node --test interop/node/

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const BIN = process.env.MANDATE_BIN;
const START_TIMEOUT_MS = 20_000;
const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const EVERYTHING = join(dirname(require.resolve('@modelcontextprotocol/server-everything/package.json')), 'dist', 'index.js');

function run(args) {
  return new Promise((resolve) => {
    execFile(BIN, args, { timeout: 15_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Spawns cmd and resolves once a line of its stderr matches re. */
function startUntil(cmd, args, env, re) {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let text = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error(`${cmd}: not ready in time\n${text}`)); }, START_TIMEOUT_MS);
    const onData = (s) => {
      text += s;
      const m = text.match(re);
      if (m) { clearTimeout(timer); resolve({ proc, match: m, log: () => text }); }
    };
    proc.stdout.setEncoding('utf8').on('data', onData);
    proc.stderr.setEncoding('utf8').on('data', onData);
    proc.once('exit', (code) => { clearTimeout(timer); reject(new Error(`${cmd} exited (${code})\n${text}`)); });
  });
}

async function stop(proc) {
  if (proc.exitCode !== null) return;
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  await Promise.race([exited, sleep(5000).then(() => proc.kill('SIGKILL'))]);
}

describe('the MCP gateway with the official TypeScript SDK and server-everything', { skip: !BIN && 'MANDATE_BIN is not set' }, () => {
  let dir, upstream, server, url, token;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-mcp-interop-'));
    const port = await freePort();
    upstream = await startUntil(process.execPath, [EVERYTHING, 'streamableHttp'], { PORT: String(port) }, /listening on port/);
    server = await startUntil(BIN, ['serve', '--addr', '127.0.0.1:0', '--data', join(dir, 'data'),
      '--mcp-stdio', `everything=${process.execPath} ${EVERYTHING} stdio`,
      '--mcp-upstream', `everyhttp=http://127.0.0.1:${port}/mcp`], {}, /msg="mandate serving" url=(http:\/\/127\.0\.0\.1:\d+)/);
    url = server.match[1];
    const data = ['--server', url, '--data', join(dir, 'data')];
    const add = await run(['agent', 'add', 'ts-agent', '--owner', 'alice@example.org',
      '--ceiling', 'mcp:everything:* mcp:everyhttp:*', '--generate-key', join(dir, 'agent.jwk'), ...data]);
    assert.equal(add.code, 0, add.stderr);
    const tok = await run(['token', '--agent', 'ts-agent', '--key', join(dir, 'agent.jwk'),
      '--scope', 'mcp:everything:echo mcp:everyhttp:echo', '--ttl-ms', '600000', ...data]);
    assert.equal(tok.code, 0, tok.stderr);
    token = tok.stdout.trim();
  });

  after(async () => {
    if (server) await stop(server.proc);
    if (upstream) await stop(upstream.proc);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  for (const route of ['everything', 'everyhttp']) {
    test(`${route}: lists only the tools in scope, calls one, and gets a denial as a JSON-RPC error`, async () => {
      const client = new Client({ name: 'ts-interop', version: '1.0.0' });
      const transport = new StreamableHTTPClientTransport(new URL(`${url}/mcp/${route}`), {
        requestInit: { headers: { Authorization: `Bearer ${token}` } },
      });
      await client.connect(transport);
      try {
        const { tools } = await client.listTools();
        assert.deepEqual(tools.map((t) => t.name), ['echo'], 'tools/list shows only the tools the mandate covers');
        const res = await client.callTool({ name: 'echo', arguments: { message: 'hello through the gateway' } });
        assert.match(res.content[0].text, /hello through the gateway/);
        await assert.rejects(
          client.callTool({ name: 'get-sum', arguments: { a: 1, b: 2 } }),
          (err) => err.code === -32001 && /does not allow mcp:[a-z]+:get-sum/.test(err.message),
          'a tool outside the mandate is refused with a JSON-RPC error',
        );
      } finally {
        await client.close();
      }
    });
  }

  test('sessions ended by close(), which sends no DELETE, do not use up the agent\'s 16', async () => {
    for (let i = 0; i < 20; i++) {
      const client = new Client({ name: 'ts-interop', version: '1.0.0' });
      const transport = new StreamableHTTPClientTransport(new URL(`${url}/mcp/everyhttp`), {
        requestInit: { headers: { Authorization: `Bearer ${token}` } },
      });
      await client.connect(transport);
      const { tools } = await client.listTools();
      assert.deepEqual(tools.map((t) => t.name), ['echo'], `session ${i + 1}`);
      await client.close();
    }
  });

  test('no mandate: 401 with the resource metadata', async () => {
    const res = await fetch(`${url}/mcp/everything`, { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }) });
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate'), /resource_metadata="http:\/\/127\.0\.0\.1:\d+\/\.well-known\/oauth-protected-resource\/mcp\/everything"/);
  });

  test('the calls are in the audit log', async () => {
    const out = await run(['audit', 'tail', '-n', '10', '--type', 'tool.call', '--json', '--server', url, '--data', join(dir, 'data')]);
    assert.equal(out.code, 0, out.stderr);
    const calls = out.stdout.trim().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(calls.map((c) => c.resource).sort(), ['mcp:everyhttp:echo', 'mcp:everything:echo']);
  });
});
