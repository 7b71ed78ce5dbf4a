// The Node anchor of `make bench`'s waiting workload: Node's own http
// server, `GET /delay?ms=N` answered after setTimeout(N), every other path
// answered at once with the same bytes as forkring's demo `GET /`.
"use strict";
const http = require("http");

const port = Number(process.argv[2]);
const hello = "Hello, World!";

http
  .createServer((req, res) => {
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
