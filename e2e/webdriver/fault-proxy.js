// An HTTP proxy between the browser and the api, for the WebDriver journeys:
// WebDriver classic cannot intercept requests (Playwright's `page.route`), so
// the failures a journey needs are made here, on the wire. Every request and
// the response's status and headers are recorded, so a journey can also prove
// that nothing was sent, or which headers the page was served with.
const http = require('node:http');

/**
 * A rule that answers matching requests itself instead of the api.
 * @typedef {{ method: string, path: RegExp, action: 'fail' | 'drop' | 'hold', status?: number, body?: string, released?: Promise<void> }} Fault
 */

class FaultProxy {
  /** @param {string} upstream the api's base URL, e.g. http://127.0.0.1:5000 */
  constructor(upstream) {
    this.upstream = new URL(upstream);
    /** @type {Fault[]} */
    this.faults = [];
    /** @type {{ method: string, path: string, status: number | 'dropped', headers: Record<string, string | string[] | undefined> }[]} */
    this.log = [];
    this.server = http.createServer((request, response) => this.handle(request, response));
    // Each response closes its connection: a browser may silently resend an
    // idempotent request that failed on a reused connection, which would
    // hide a dropped connection from the page.
    this.server.keepAliveTimeout = 1;
  }

  /** Starts listening on a free loopback port and returns the proxy's URL. */
  async start() {
    await new Promise((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${this.server.address().port}`;
    return this.url;
  }

  async stop() {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }

  /** Answers matching requests with `status` and a problem body until cleared. */
  fail(method, path, status, body) {
    return this.add({ method, path, action: 'fail', status, body });
  }

  /** Closes matching requests' connections without an answer until cleared. */
  drop(method, path) {
    return this.add({ method, path, action: 'drop' });
  }

  /**
   * Holds matching requests until the returned function is called, then
   * answers them with `status` and `body` instead of the api.
   */
  hold(method, path, status, body) {
    let release;
    const released = new Promise((resolve) => { release = resolve; });
    const clear = this.add({ method, path, action: 'hold', status, body, released });
    return () => { clear(); release(); };
  }

  /** Removes every fault. */
  clear() {
    this.faults = [];
  }

  /** The requests recorded since `mark` (an index into the log) matching `method` and `path`. */
  requests(method, path, mark = 0) {
    return this.log.slice(mark).filter((entry) => entry.method === method && path.test(entry.path));
  }

  add(fault) {
    this.faults.push(fault);
    return () => { this.faults = this.faults.filter((each) => each !== fault); };
  }

  async handle(request, response) {
    const entry = { method: request.method, path: request.url, status: 0, headers: {} };
    this.log.push(entry);
    const fault = this.faults.find((each) => each.method === request.method && each.path.test(request.url));
    if (fault?.action === 'drop') {
      entry.status = 'dropped';
      request.socket.destroy();
      return;
    }
    if (fault?.action === 'hold') await fault.released;
    if (fault) {
      request.resume();
      entry.status = fault.status;
      const type = fault.status >= 400 ? 'application/problem+json' : 'application/json';
      response.writeHead(fault.status, { 'content-type': type, connection: 'close' });
      response.end(fault.body);
      return;
    }
    const upstream = http.request({
      host: this.upstream.hostname,
      port: this.upstream.port,
      method: request.method,
      path: request.url,
      headers: { ...request.headers, host: this.upstream.host },
    }, (reply) => {
      entry.status = reply.statusCode;
      entry.headers = reply.headers;
      response.writeHead(reply.statusCode, { ...reply.headers, connection: 'close' });
      reply.pipe(response);
    });
    upstream.on('error', (error) => {
      entry.status = 502;
      response.writeHead(502, { 'content-type': 'text/plain', connection: 'close' });
      response.end(`proxy: the api did not answer: ${error.message}`);
    });
    request.pipe(upstream);
  }
}

module.exports = { FaultProxy };
