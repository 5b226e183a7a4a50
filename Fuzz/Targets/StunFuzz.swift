import MeshStun

/// STUN datagrams as the node's port receives them (first byte 0–3): the codec must parse a message back to itself
/// after serializing, and the node's responder must answer only with a response that parses and carries the source
/// (as XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS to an RFC 3489 request).
enum StunFuzz {
    static let source = StunAddress(ip: [198, 18, 0, 9], port: 50_000)!

    static func run(_ input: [UInt8]) {
        if let message = try? StunMessage(parsing: input) {
            let again = try? StunMessage(parsing: message.serialized(fingerprint: message.hadFingerprint))
            precondition(again == message, "STUN round trip")
        }
        var responder = StunResponder(nowMs: Fuzz.nowMs)
        if case .answer(let bytes) = responder.receive(input, from: source, nowMs: Fuzz.nowMs) {
            let answer = try? StunMessage(parsing: bytes)
            precondition((answer?.xorMappedAddress ?? answer?.mappedAddress) == source, "STUN answer")
        }
    }

    /// A Binding Request with and without FINGERPRINT, one with SOFTWARE, an RFC 3489 one, and the kinds of answer.
    static func seeds() -> [[UInt8]] {
        let txid: [UInt8] = Array(1...12)
        return [
            StunMessage.bindingRequest(transactionID: txid),
            StunMessage(type: .bindingRequest, transactionID: txid).serialized(fingerprint: false),
            StunMessage(type: .bindingRequest, transactionID: txid,
                        attributes: [.init(type: StunMessage.AttributeType.software, value: Array("mesh".utf8))]).serialized(),
            StunMessage(type: .bindingRequest, transactionID: Array(1...16)).serialized(),
            StunMessage.bindingSuccess(transactionID: txid, mapped: source),
            StunMessage.bindingSuccess(transactionID: txid, mapped: StunAddress(ip: Array(0..<16), port: 1)!),
        ]
    }
}
