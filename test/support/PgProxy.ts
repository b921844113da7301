/**
 * A TCP proxy in front of the test server that can cut its clients off while the server side of
 * each connection stays open: the client sees its connection lost, the server goes on with the
 * statement it was running (what a dropped network path looks like to both ends).
 */
import * as Net from "node:net"

export interface Proxy {
  readonly port: number
  /** Drops every client connection now; the server sides stay open and their output is discarded. */
  readonly cut: () => void
  readonly close: () => void
}

export const cutProxy = (serverPort: number): Promise<Proxy> =>
  new Promise((resolve, reject) => {
    const pairs = new Set<{ client: Net.Socket; server: Net.Socket }>()
    const orphans = new Set<Net.Socket>()
    const proxy = Net.createServer((client) => {
      const server = Net.connect(serverPort, "127.0.0.1")
      const pair = { client, server }
      pairs.add(pair)
      client.pipe(server)
      server.pipe(client)
      const drop = () => {
        pairs.delete(pair)
        client.destroy()
        server.destroy()
      }
      client.on("error", drop)
      server.on("error", drop)
      client.on("close", () => pairs.has(pair) && drop())
      server.on("close", () => pairs.has(pair) && drop())
    })
    proxy.once("error", reject)
    proxy.listen(0, "127.0.0.1", () => {
      const address = proxy.address() as Net.AddressInfo
      resolve({
        port: address.port,
        cut: () => {
          for (const pair of [...pairs]) {
            pairs.delete(pair)
            pair.server.unpipe(pair.client)
            pair.client.unpipe(pair.server)
            pair.server.on("data", () => undefined)
            orphans.add(pair.server)
            pair.client.destroy()
          }
        },
        close: () => {
          for (const pair of pairs) {
            pair.client.destroy()
            pair.server.destroy()
          }
          for (const server of orphans) server.destroy()
          proxy.close()
        }
      })
    })
  })
