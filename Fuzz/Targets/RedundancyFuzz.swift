import MeshMedia

/// The redundant payload (payload type 112) on its own: it must parse back to itself after serializing.
enum RedundancyFuzz {
    static func run(_ input: [UInt8]) {
        guard let payload = RedundantPayload(parsing: input) else { return }
        precondition(RedundantPayload(parsing: payload.serialize()) == payload, "redundant payload round trip")
    }

    /// The payloads of the real packets that carry copies.
    static func seeds() -> [[UInt8]] {
        RTPFuzz.packets().compactMap(RTPPacket.init(parsing:)).filter { $0.payloadType == RedundantPayload.payloadType }
            .prefix(5).map(\.payload)
    }
}
