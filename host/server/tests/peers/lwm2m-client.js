// Line-driven wrapper around the independent LwM2M *client* of the npm package
// `lwm2m-node-lib`, so the wasmdm server's tests can manage a third-party client.
// Usage: node lwm2m-client.js <server-port> <endpoint> <local-port>
// stdout: one JSON line per event: {"event":"registered","location":...},
//         {"event":"write",...}, {"event":"execute",...}; stdin: {"op":"set","path":"/3/0/1","value":"x"},
//         {"op":"update"}, {"op":"deregister"}, {"op":"quit"}.
'use strict';

const path = require('path');
const peers = path.join(__dirname, '..', '..', '..', '..', 'tests', 'peers', 'node_modules');
module.paths.unshift(peers);

// Bind loopback only (the library listens on every address).
const coap = require(path.join(peers, 'coap'));
const createServer = coap.createServer;
coap.createServer = function (...args) {
  const server = createServer.apply(this, args);
  const listen = server.listen.bind(server);
  server.listen = (port, cb) => listen(port, '127.0.0.1', cb);
  return server;
};
const lib = require(path.join(peers, 'lwm2m-node-lib'));
const client = lib.client;
const readline = require('readline');

const serverPort = parseInt(process.argv[2], 10);
const endpoint = process.argv[3] || 'node-peer';
const localPort = parseInt(process.argv[4] || '0', 10);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

const config = {
  client: {
    lifetime: '60',
    version: '1.0',
    logLevel: 'FATAL',
    observe: { period: 200 },
    ipProtocol: 'udp4',
    serverProtocol: 'udp4',
    formats: [{ name: 'text/plain', value: 0 }],
    writeFormat: 'text/plain',
  },
};

function ignore() {}

client.init(config);
const objects = [
  ['/3/0', [[0, 'wasmdm-test'], [1, 'node-peer'], [2, 'SN-1']]],
  ['/1000/0', [[1, '42'], [2, 'idle']]],
];

function createAll(i, done) {
  if (i >= objects.length) return done();
  const [uri, resources] = objects[i];
  client.registry.create(uri, (err) => {
    if (err) return done(err);
    let n = 0;
    const next = () => {
      if (n >= resources.length) return createAll(i + 1, done);
      const [id, v] = resources[n++];
      client.registry.setResource(uri, id, v, next);
    };
    next();
  });
}

createAll(0, (err) => {
  if (err) {
    out({ event: 'error', error: String(err) });
    process.exit(1);
  }
  client.register('127.0.0.1', serverPort, '', endpoint, (rerr, info) => {
    if (rerr) {
      out({ event: 'error', error: String(rerr) });
      process.exit(1);
    }
    client.setHandler(info.serverInfo, 'write', (objectType, objectId, resourceId, value, cb) => {
      out({ event: 'write', path: `/${objectType}/${objectId}/${resourceId}`, value: String(value) });
      cb();
    });
    client.setHandler(info.serverInfo, 'execute', (objectType, objectId, resourceId, args, cb) => {
      out({ event: 'execute', path: `/${objectType}/${objectId}/${resourceId}`, args: args ? String(args) : '' });
      client.registry.setResource(`/${objectType}/${objectId}`, 2, 'executed', ignore);
      cb();
    });
    out({ event: 'registered', location: info.location, localPort });

    const rl = readline.createInterface({ input: process.stdin });
    rl.on('line', (line) => {
      let cmd;
      try {
        cmd = JSON.parse(line);
      } catch (e) {
        out({ event: 'error', error: 'bad command' });
        return;
      }
      if (cmd.op === 'set') {
        const p = cmd.path.split('/').filter((s) => s);
        client.registry.setResource(`/${p[0]}/${p[1]}`, p[2], String(cmd.value), (e) =>
          out({ event: 'set', ok: !e }));
      } else if (cmd.op === 'update') {
        client.update(info, (e) => out({ event: 'updated', ok: !e, error: e ? String(e) : null }));
      } else if (cmd.op === 'deregister') {
        client.unregister(info, (e) => out({ event: 'deregistered', ok: !e, error: e ? String(e) : null }));
      } else if (cmd.op === 'quit') {
        process.exit(0);
      }
    });
  });
});
