// A line-driven wrapper around the independent LwM2M server of the npm package
// `lwm2m-node-lib`, so Rust integration tests can drive a real third-party
// server. Usage: node lwm2m-server.js <udp-port>
// stdin:  one JSON command per line, e.g. {"id":1,"op":"read","ep":"dev","path":"/3/0/0"}
// stdout: one JSON line per answer ({"id":1,"ok":true,"value":"..."}) or event
//         ({"event":"registration","ep":"dev",...}); the first line is {"event":"ready"}.
'use strict';

// Bind loopback only (the library listens on every address): wrap the coap
// package's createServer before lwm2m-node-lib uses it.
const coap = require('coap');
const createServer = coap.createServer;
coap.createServer = function (...args) {
  const server = createServer.apply(this, args);
  const listen = server.listen.bind(server);
  server.listen = (port, cb) => listen(port, '127.0.0.1', cb);
  return server;
};
const lwm2m = require('lwm2m-node-lib').server;
const readline = require('readline');

const port = parseInt(process.argv[2] || '5683', 10);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

const config = {
  port,
  udpWindow: 100,
  lifetimeCheckInterval: 1000,
  defaultType: 'Device',
  logLevel: 'FATAL',
  ipProtocol: 'udp4',
  serverProtocol: 'udp4',
  // lwm2m-node-lib defaults to pre-1.0 content-format numbers (1541...);
  // a 1.0/1.1 client only knows text/plain (0) for single resources.
  writeFormat: 'text/plain',
  defaultAcceptFormat: 'text/plain',
  formats: [],
  types: [],
};

function split(path) {
  const p = path.split('/').filter((s) => s.length > 0);
  return { obj: p[0], inst: p[1], res: p[2] };
}

function reply(id) {
  return (err, value) => {
    if (err) {
      out({ id, ok: false, error: String(err.name || err), code: err.code || null });
    } else {
      out({ id, ok: true, value: value === undefined ? null : value });
    }
  };
}

lwm2m.start(config, (err, serverInfo) => {
  if (err) {
    out({ event: 'error', error: String(err) });
    process.exit(1);
  }
  lwm2m.setHandler(serverInfo, 'registration', (ep, lt, version, binding, payload, cb) => {
    out({ event: 'registration', ep, lifetime: lt, version, binding, payload });
    cb();
  });
  lwm2m.setHandler(serverInfo, 'updateRegistration', (obj, payload, cb) => {
    out({ event: 'update', ep: obj && obj.name, payload: payload || null });
    cb();
  });
  lwm2m.setHandler(serverInfo, 'unregistration', (device, cb) => {
    out({ event: 'deregistration', ep: device && device.name });
    cb();
  });

  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    let cmd;
    try {
      cmd = JSON.parse(line);
    } catch (e) {
      out({ event: 'error', error: 'bad command: ' + line });
      return;
    }
    const id = cmd.id;
    if (cmd.op === 'quit') {
      lwm2m.stop(serverInfo, () => process.exit(0));
      return;
    }
    lwm2m.getDevice(cmd.ep, (gerr, device) => {
      if (gerr) {
        out({ id, ok: false, error: 'unknown device ' + cmd.ep });
        return;
      }
      const { obj, inst, res } = split(cmd.path || '');
      switch (cmd.op) {
        case 'read':
          lwm2m.read(device.id, obj, inst, res, reply(id));
          break;
        case 'write':
          lwm2m.write(device.id, obj, inst, res, String(cmd.value), reply(id));
          break;
        case 'execute':
          lwm2m.execute(device.id, obj, inst, res, cmd.value === undefined ? '' : String(cmd.value), reply(id));
          break;
        case 'discover':
          lwm2m.discover(device.id, obj, inst, res, reply(id));
          break;
        case 'write-attributes':
          lwm2m.writeAttributes(device.id, obj, inst, res, cmd.attributes || {}, reply(id));
          break;
        case 'create':
          lwm2m.create(device.id, obj, inst, reply(id));
          break;
        case 'observe':
          lwm2m.observe(device.id, obj, inst, res,
            (value, objType, objId, resId, deviceId) => {
              out({ event: 'notify', ep: cmd.ep, path: cmd.path, value });
            },
            reply(id));
          break;
        default:
          out({ id, ok: false, error: 'unknown op ' + cmd.op });
      }
    });
  });
  out({ event: 'ready', port });
});
