// The Node anchor of `make bench`'s waiting and server-sent events
// workloads: Node's own http server. `GET /delay?ms=N` is answered after
// setTimeout(N); `GET /stream?n=N&ms=M` sends N events `data: i` M ms apart
// as text/event-stream (chunked), each stream on its own setInterval, like
// forkring's demo route; every other path is answered at once with the same
// bytes as forkring's demo `GET /`.
"use strict";
const http = require("http");

const port = Number(process.argv[2]);
const hello = "Hello, World!";

http
  .createServer((req, res) => {
    if (req.url.startsWith("/stream")) {
      const q = new URL(req.url, "http://x").searchParams;
      const n = Number(q.get("n") || 0);
      const ms = Number(q.get("ms") || 1000);
      res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
      let i = 0;
      const timer = setInterval(() => {
        if (i >= n) {
          clearInterval(timer);
          res.end();
          return;
        }
        res.write(`data: ${i}\n\n`);
        i += 1;
      }, ms);
      res.on("close", () => clearInterval(timer));
      return;
    }
    if (req.url.startsWith("/delay")) {
      const ms = Number(new URL(req.url, "http://x").searchParams.get("ms") || 0);
      setTimeout(() => {
        res.writeHead(200, { "Content-Type": "text/plain", "Content-Length": 5 });
        res.end("done\n");
      }, ms);
      return;
    }
    res.writeHead(200, { "Content-Type": "text/plain", "Content-Length": hello.length });
    res.end(hello);
  })
  .listen(port, "127.0.0.1", () => console.log(`listening on 127.0.0.1:${port}`));
