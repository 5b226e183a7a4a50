import MeshControl

/// Control-socket requests (docs/control.md): a JSON-RPC line, decoded as the server decodes it, must decode
/// to itself again after encoding.
enum RPCFuzz {
    static func run(_ input: [UInt8]) {
        guard let message = RPCMessage.decode(line: input) else { return }
        precondition(RPCMessage.decode(line: message.encodedLine().dropLast()) == message, "JSON-RPC round trip")
    }

    /// Requests as `node-ctl` and `mesh-node call` send them, a notification and a response.
    static func seeds() -> [[UInt8]] {
        let messages: [RPCMessage] = [
            .request(id: 1, method: "info"),
            .request(id: 2, method: "call.place", params: .object([
                "to": .string(Fuzz.remoteWalletKey.address.description), "bitrate": .number(24_000),
                "play": .bool(true), "list": .array([.null, .number(-1.5e300), .string("\u{1F600}\"\\")]),
            ])),
            .notification(method: "call.audio", params: .object(["samples": .string("AAAA")])),
            .response(id: 3, result: .object(["ok": .bool(true)])),
            .failure(id: nil, error: .invalidRequest("no method")),
        ]
        return messages.map { Array($0.encodedLine().dropLast()) }
    }
}
