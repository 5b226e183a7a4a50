import MeshIdentity
import MeshWire

/// 16 bytes that prove a requester receives datagrams at its source endpoint (docs/dht.md, "Cookies").
public struct Cookie: Sendable, Hashable {
    public static let byteCount = 16
    public let bytes: [UInt8]
    public init(bytes: [UInt8]) { self.bytes = bytes }
}

/// The responder's side: cookies are Keccak-256(secret ‖ epoch ‖ endpoint) cut to 16 bytes, an epoch lasting
/// `epochMs`; a cookie of the current or the previous epoch is valid, so one lives 2–4 minutes and nothing is
/// stored per requester. Checking one costs a hash, not a signature recovery.
struct CookieJar: Sendable {
    private let secret: [UInt8]
    static let epochMs: Int64 = 120_000

    init(seed: UInt64) {
        var w = ByteWriter(capacity: 24)
        w.write(bytes: Array("meshdht/v1/cookie".utf8))
        w.write(seed)
        secret = Keccak.hash256(w.bytes)
    }

    func cookie(for endpoint: DHTEndpoint, nowMs: Int64) -> Cookie {
        cookie(for: endpoint, epoch: Self.epoch(nowMs))
    }

    func isValid(_ cookie: Cookie, for endpoint: DHTEndpoint, nowMs: Int64) -> Bool {
        let epoch = Self.epoch(nowMs)
        return cookie == self.cookie(for: endpoint, epoch: epoch) || cookie == self.cookie(for: endpoint, epoch: epoch &- 1)
    }

    private func cookie(for endpoint: DHTEndpoint, epoch: UInt64) -> Cookie {
        var w = ByteWriter(capacity: 64)
        w.write(bytes: secret)
        w.write(epoch)
        endpoint.write(to: &w)
        return Cookie(bytes: Array(Keccak.hash256(w.bytes).prefix(Cookie.byteCount)))
    }

    private static func epoch(_ nowMs: Int64) -> UInt64 { UInt64(bitPattern: nowMs / epochMs) }
}
