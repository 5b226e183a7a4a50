import MeshCall
import MeshICE
import MeshWire

/// One call's direct path (docs/calls.md, "Direct paths"): the ICE agent of the current attempt, whether media goes
/// over it, and the figures the call summary shows. Owned by the node's event loop; the agent's events reach it
/// through `loop.execute`, tagged with the generation they belong to.
final class DirectPath {
    let caller: Bool
    let key: IceKey
    let answeredAt: Int64
    /// The current attempt; 0 before the first. The caller starts each attempt with a higher one; the callee follows.
    var generation: UInt32 = 0
    var agent: ICEAgent?
    var attemptStartedAt: Int64 = 0
    /// The peer's credentials for this generation are set; candidates that came before them wait in `early`.
    var remoteReady = false
    var early: [String] = []
    var earlyEnd = false
    var selected: (local: CandidateInfo, remote: CandidateInfo)?
    var selectedAt: Int64?
    /// Since when media goes direct (nil: on the chain), and until when it still goes on the chain as well.
    var directSince: Int64?
    var overlapUntil: Int64 = 0
    var lastReceived: Int64 = 0
    var lastKeepalive: Int64 = 0
    /// The caller's next attempt after a failure or a fallback, and the wait after the one after it.
    var nextAttempt: Int64?
    var backoffMs = DirectPath.firstBackoffMs
    var attempts = 0
    var fallbacks = 0
    var msToDirect: Int64?
    var directMsBefore: Int64 = 0
    var endedAt: Int64?

    /// Keepalive on the direct path every 100 ms, media or not; the path is dead after 400 ms without an authentic
    /// keepalive from the peer over it (four lost in a row, or a cut), which leaves room to be back on the chain
    /// within a second.
    static let keepaliveMs: Int64 = 100
    static let deadAfterMs: Int64 = 400
    /// Media goes over both paths this long after the move (make-before-break): ten packets at 20 ms.
    static let overlapMs: Int64 = 200
    /// A selected pair that brings nothing from the peer within this is given up (its direction toward us is broken).
    static let selectedSilenceMs: Int64 = 1_000
    /// An attempt that selects no pair within this is given up (lost signalling, or no pair can work).
    static let attemptTimeoutMs: Int64 = 5_000
    static let firstBackoffMs: Int64 = 5_000
    static let maxBackoffMs: Int64 = 60_000
    /// The last keepalive number sent, and the highest one taken from the peer.
    private var keepalivesSent: UInt32 = 0
    private var keepaliveHeard: UInt32 = 0

    init(caller: Bool, key: IceKey, now: Int64) {
        self.caller = caller
        self.key = key
        answeredAt = now
        nextAttempt = caller ? now : nil
    }

    /// Media goes direct now (possibly still on the chain too: `onChainToo`).
    var isDirect: Bool { directSince != nil }

    func onChainToo(now: Int64) -> Bool { directSince == nil || now < overlapUntil }

    /// A new attempt with `agent`: what the previous one left is cleared.
    func begin(generation: UInt32, agent: ICEAgent, now: Int64) {
        self.agent?.close()
        self.generation = generation
        self.agent = agent
        attemptStartedAt = now
        remoteReady = false
        early = []
        earlyEnd = false
        selected = nil
        selectedAt = nil
        attempts += 1
    }

    /// The next keepalive: "meshka", side u8 (0 caller, 1 callee), generation u32, number u32 (growing through the
    /// call), then the first 16 bytes of Keccak-256(keepalive key ‖ 0x6D ‖ everything before). Only the two ends hold
    /// the key (from the SRTP master keys): nobody else can make a dead path look alive or a path nobody answers
    /// look proven.
    func keepalive() -> [UInt8] {
        keepalivesSent &+= 1
        var w = ByteWriter(capacity: 31)
        w.write(bytes: IceKey.keepaliveMagic)
        w.write(UInt8(caller ? 0 : 1))
        w.write(generation)
        w.write(keepalivesSent)
        return key.keepaliveKey.seal(w.bytes)
    }

    /// Whether `bytes` is a keepalive from the peer for this attempt, authentic and newer than any before (a replay,
    /// a reflection of this end's own, or another attempt's is not).
    func takeKeepalive(_ bytes: [UInt8]) -> Bool {
        guard let content = key.keepaliveKey.open(bytes), content.starts(with: IceKey.keepaliveMagic) else { return false }
        var r = ByteReader(Array(content.dropFirst(IceKey.keepaliveMagic.count)))
        guard let side = r.readUInt8(), side == (caller ? 1 : 0), r.readUInt32() == generation, let number = r.readUInt32(),
              r.isAtEnd, number > keepaliveHeard else { return false }
        keepaliveHeard = number
        return true
    }

    /// An authentic keepalive came from the peer over the direct path; true when this moved media onto it.
    func received(now: Int64) -> Bool {
        lastReceived = now
        guard directSince == nil, selected != nil else { return false }
        directSince = now
        overlapUntil = now + Self.overlapMs
        backoffMs = Self.firstBackoffMs
        if msToDirect == nil { msToDirect = now - answeredAt }
        return true
    }

    /// Back on the chain: the agent closed; the caller tries again after the backoff. True when media was direct.
    @discardableResult
    func fallBack(now: Int64) -> Bool {
        agent?.close()
        agent = nil
        selected = nil
        selectedAt = nil
        let wasDirect = directSince != nil
        if let since = directSince {
            directMsBefore += now - since
            fallbacks += 1
        }
        directSince = nil
        if caller {
            nextAttempt = now + backoffMs
            backoffMs = min(backoffMs * 2, Self.maxBackoffMs)
        }
        return wasDirect
    }

    /// The call ended: the agent closed, the figures frozen.
    func end(now: Int64) {
        agent?.close()
        agent = nil
        if let since = directSince { directMsBefore += now - since }
        directSince = nil
        nextAttempt = nil
        endedAt = now
    }

    /// Why the path must be given up now, if it must.
    func deadline(now: Int64) -> String? {
        guard agent != nil else { return nil }
        if directSince != nil, now - lastReceived > Self.deadAfterMs { return "nothing over the direct path for \(now - lastReceived) ms" }
        if directSince == nil, let selectedAt, now - selectedAt > Self.selectedSilenceMs { return "selected pair silent" }
        if selectedAt == nil, now - attemptStartedAt > Self.attemptTimeoutMs { return "no pair selected" }
        return nil
    }

    func directMs(now: Int64) -> Int64 { directMsBefore + (directSince.map { (endedAt ?? now) - $0 } ?? 0) }

    /// The call summary's `direct` object.
    func summary(now: Int64) -> [String: Double] {
        let end = endedAt ?? now
        let direct = directMs(now: end)
        var figures: [String: Double] = ["attempts": Double(attempts), "fallbacks": Double(fallbacks),
                                         "msDirect": Double(direct), "msRelayed": Double(end - answeredAt - direct)]
        if let msToDirect { figures["msToDirect"] = Double(msToDirect) }
        return figures
    }
}
