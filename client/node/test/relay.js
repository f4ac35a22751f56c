'use strict'

// A TCP relay in front of a real server, for the tests of what the adapter
// does with answers no connbudget server gives. It passes every byte, but:
//
// - while hideShare is set, the name connbudget.share in what clients send
//   becomes connbudget.shxre (as long), which the server does not know: it
//   answers 42704, as a server older than connbudget 1.2 does;
// - while share is not null, the server's DataRow messages that carry a
//   share (a column beginning "protocol=") carry share.value instead (a
//   string, or null for SQL NULL).

const net = require('net')

const SHARE = Buffer.from('connbudget.share')
const HIDDEN = Buffer.from('connbudget.shxre')

// buf with every needle replaced by replacement (of the same length).
function replaceAll (buf, needle, replacement) {
  let at = buf.indexOf(needle)
  if (at < 0) return buf
  const out = Buffer.from(buf)
  while (at >= 0) {
    replacement.copy(out, at)
    at = out.indexOf(needle, at + needle.length)
  }
  return out
}

// A DataRow ('D') message with its share column rewritten, or msg as it is.
function rewriteRow (msg, share) {
  const n = msg.readInt16BE(5)
  const cols = []
  let at = 7
  let found = false
  for (let i = 0; i < n; i++) {
    const len = msg.readInt32BE(at)
    const value = len < 0 ? null : msg.subarray(at + 4, at + 4 + len)
    at += 4 + Math.max(len, 0)
    if (value && value.toString('latin1').startsWith('protocol=')) {
      found = true
      cols.push(share === null ? null : Buffer.from(share))
    } else {
      cols.push(value)
    }
  }
  if (!found) return msg
  const body = [Buffer.alloc(2)]
  body[0].writeInt16BE(n)
  for (const col of cols) {
    const len = Buffer.alloc(4)
    len.writeInt32BE(col === null ? -1 : col.length)
    body.push(len)
    if (col) body.push(col)
  }
  const payload = Buffer.concat(body)
  const head = Buffer.alloc(5)
  head.write('D', 0, 'latin1')
  head.writeInt32BE(payload.length + 4, 1)
  return Buffer.concat([head, payload])
}

class Relay {
  constructor (host, port) {
    this.target = { host, port }
    this.hideShare = false
    this.share = null
    this.rewritten = 0 // shares rewritten
    this.sockets = new Set()
    this.server = net.createServer((client) => this._relay(client))
  }

  listen () {
    return new Promise((resolve) => this.server.listen(0, '127.0.0.1', () => {
      this.port = this.server.address().port
      resolve(this.port)
    }))
  }

  _relay (client) {
    const upstream = net.connect(this.target)
    this.sockets.add(client).add(upstream)
    const drop = () => {
      client.destroy()
      upstream.destroy()
      this.sockets.delete(client)
      this.sockets.delete(upstream)
    }
    client.on('error', drop).on('close', drop)
    upstream.on('error', drop).on('close', drop)
    client.on('data', (chunk) => upstream.write(this.hideShare ? replaceAll(chunk, SHARE, HIDDEN) : chunk))
    let pending = Buffer.alloc(0)
    upstream.on('data', (chunk) => {
      pending = Buffer.concat([pending, chunk])
      const out = []
      while (pending.length >= 5) {
        const size = 1 + pending.readInt32BE(1)
        if (pending.length < size) break
        let msg = pending.subarray(0, size)
        pending = pending.subarray(size)
        if (msg[0] === 0x44 && this.share !== null) {
          const rewritten = rewriteRow(msg, this.share.value)
          if (rewritten !== msg) this.rewritten++
          msg = rewritten
        }
        out.push(msg)
      }
      if (out.length) client.write(Buffer.concat(out))
    })
  }

  close () {
    for (const socket of this.sockets) socket.destroy()
    return new Promise((resolve) => this.server.close(() => resolve()))
  }
}

module.exports = { Relay }
