import MeshControl

/// Control-socket requests (docs/control.md): a JSON-RPC line, decoded as the server decodes it (one message or
/// a batch), must decode to itself again after encoding.
enum RPCFuzz {
    static func run(_ input: [UInt8]) {
        switch RPCIncoming(line: input) {
        case .single(let message):
            precondition(RPCMessage.decode(line: message.encodedLine().dropLast()) == message, "JSON-RPC round trip")
        case .batch(let entries):
            let valid = entries.compactMap { $0 }
            precondition(RPCIncoming(line: RPCMessage.encodedLine(batch: valid).dropLast()) == .batch(valid),
                         "JSON-RPC batch round trip")
        case nil:
            return
        }
    }

    /// Requests as `node-ctl` and `mesh-node call` send them, a string id, a notification, a response and a batch.
    static func seeds() -> [[UInt8]] {
        let messages: [RPCMessage] = [
            .request(id: .number(1), method: "info"),
            .request(id: .string("a-1"), method: "call.place", params: .object([
                "to": .string(Fuzz.remoteWalletKey.address.description), "bitrate": .number(24_000),
                "play": .bool(true), "list": .array([.null, .number(-1.5e300), .string("\u{1F600}\"\\")]),
            ])),
            .notification(method: "call.audio", params: .object(["samples": .string("AAAA")])),
            .response(id: .number(3), result: .object(["ok": .bool(true)])),
            .failure(id: nil, error: .invalidRequest("no method")),
        ]
        return messages.map { Array($0.encodedLine().dropLast()) } + [Array(RPCMessage.encodedLine(batch: messages).dropLast())]
    }
}
