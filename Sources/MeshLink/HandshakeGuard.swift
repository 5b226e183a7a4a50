import MeshIdentity
import MeshWire
import Synchronization

/// What the link layer needs to know of an endpoint to defend its handshake (docs/links.md).
public protocol LinkEndpoint: Hashable, Sendable, CustomStringConvertible {
    /// The endpoint as bytes (address and port): a cookie is a MAC of these.
    var cookieBytes: [UInt8] { get }
    /// The source a rate limit counts against: the host without its port (for IPv6 its /64), so one host
    /// cannot get more handshake work done by using many ports.
    var rateLimitKey: [UInt8] { get }
}

/// The randomness the link and call layers draw on: session indexes, ephemeral keys, cookie secrets (injected,
/// so tests and the simulator are deterministic).
public struct LinkRandom: Sendable {
    public let bytes: @Sendable (Int) -> [UInt8]
    public init(bytes: @escaping @Sendable (Int) -> [UInt8]) { self.bytes = bytes }
    public static let secure = LinkRandom(bytes: SecureRandom.bytes)

    /// A repeatable stream from `seed`, for tests and simulations only: it is not secret.
    public static func seeded(_ seed: UInt64) -> LinkRandom {
        let state = Seeded(seed)
        return LinkRandom { count in state.rng.withLock { rng in (0..<count).map { _ in UInt8(truncatingIfNeeded: rng.next()) } } }
    }

    private final class Seeded: Sendable {
        let rng: Mutex<SplitMix64>
        init(_ seed: UInt64) { rng = Mutex(SplitMix64(seed: seed)) }
    }
}

/// The cheap MACs of the handshake: keyed BLAKE2b with a 16-byte output. Public for `mesh-flood`, which makes
/// initiations the way an attacker who looked the node's address up would (docs/hardening.md).
public enum HandshakeMAC {
    public static func mac(key: [UInt8], _ message: [UInt8]) -> [UInt8] { LinkCrypto.hash(message, key: key, length: LinkWire.macBytes) }

    /// mac1's key: a hash of the responder's node address (what every dialler of a named node knows).
    public static func mac1Key(responder: [UInt8]) -> [UInt8] { LinkCrypto.hash(LinkWire.mac1Label + responder) }

    /// Constant-time comparison of two MACs.
    static func equal(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for i in a.indices { diff |= a[i] ^ b[i] }
        return diff == 0
    }
}

/// The responder's stateless defences before any signature work: the load meter, cookies bound to the
/// source endpoint (a rotating secret, WireGuard's mac2), and a token bucket per source host.
struct HandshakeGuard: Sendable {
    let config: LinkConfig
    let random: LinkRandom
    private var secret: [UInt8] = []
    private var previousSecret: [UInt8]?
    private var secretCreatedAt: Int64?
    private var windowStart: Int64?
    private var inWindow = 0
    private var inLastWindow = 0
    private var buckets: [[UInt8]: TokenBucket] = [:]
    private var rate: TokenBucket.Rate {
        TokenBucket.Rate(perSecond: config.handshakesPerSecondPerSource, burst: Double(config.handshakeBurstPerSource))
    }

    init(config: LinkConfig, random: LinkRandom) {
        self.config = config
        self.random = random
    }

    /// Counts one initiation that passed mac1; returns whether the node is under load (a cookie is required).
    mutating func countHandshake(now: Int64) -> Bool {
        let sinceStart = windowStart.map { now - $0 } ?? .max
        if sinceStart >= 1_000 {
            inLastWindow = sinceStart >= 2_000 ? 0 : inWindow
            inWindow = 0
            windowStart = now
        }
        inWindow += 1
        return max(inWindow, inLastWindow) > config.handshakesPerSecondUnderLoad
    }

    /// The cookie for `source` under the current secret (drawn anew every `cookieSecretLifetimeMs`).
    mutating func cookie(for source: some LinkEndpoint, now: Int64) -> [UInt8] {
        rotate(now: now)
        return HandshakeMAC.mac(key: secret, source.cookieBytes)
    }

    /// Whether an initiation's mac2 was made with a cookie this node gave `source` (current or previous secret).
    mutating func validMac2(_ initiation: HandshakeInit, from source: some LinkEndpoint, now: Int64) -> Bool {
        rotate(now: now)
        let covered = initiation.transcript + initiation.mac1
        return [secret, previousSecret].contains { key in
            key.map { HandshakeMAC.equal(initiation.mac2, HandshakeMAC.mac(key: HandshakeMAC.mac(key: $0, source.cookieBytes), covered)) } ?? false
        }
    }

    /// The bucket hosts share once `rateLimitSources` hosts are tracked (no host's key is empty).
    static let overflowKey: [UInt8] = []

    /// Takes a token from `source`'s bucket; false when it is empty. Once the table of buckets is full, new hosts
    /// share one bucket, so filling the table throttles newcomers instead of locking them out.
    mutating func allow(_ source: some LinkEndpoint, now: Int64) -> Bool {
        let own = source.rateLimitKey
        let key = buckets[own] != nil || buckets.count < config.rateLimitSources ? own : Self.overflowKey
        var bucket = buckets[key] ?? TokenBucket(rate, nowMs: now)
        let allowed = bucket.take(rate, nowMs: now)
        buckets[key] = bucket
        return allowed
    }

    /// Forgets buckets that have refilled (they would start full anyway).
    mutating func prune(now: Int64) {
        let rate = rate
        buckets = buckets.filter { var b = $0.value; return b.refill(rate, nowMs: now) < rate.burst }
    }

    private mutating func rotate(now: Int64) {
        let age = secretCreatedAt.map { now - $0 } ?? .max
        guard age >= config.cookieSecretLifetimeMs else { return }
        previousSecret = age >= 2 * config.cookieSecretLifetimeMs ? nil : secret
        secret = random.bytes(32)
        secretCreatedAt = now
    }
}
