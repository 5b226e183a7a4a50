import MeshIdentity
import MeshWire

/// A call's quality tiers, worst first. Each names the media profile both ends send at (MeshMedia's
/// `QualityProfile` of the same name): docs/calls.md, "Quality".
public enum QualityTier: Int, Comparable, CaseIterable, Codable, Sendable, CustomStringConvertible {
    case catastrophic, degraded, normal, good, studio

    public static func < (a: QualityTier, b: QualityTier) -> Bool { a.rawValue < b.rawValue }
    public var description: String { name }
    public var name: String {
        switch self {
        case .catastrophic: "catastrophic"
        case .degraded: "degraded"
        case .normal: "normal"
        case .good: "good"
        case .studio: "studio"
        }
    }

    public static func named(_ name: String) -> QualityTier? { allCases.first { $0.name == name } }

    /// The tier of a call that asked for `bitrate` (the highest whose profile fits in it).
    public init(bitrate: Int) {
        self = bitrate >= 64_000 ? .studio : bitrate >= 32_000 ? .good : bitrate >= 24_000 ? .normal : bitrate >= 12_000 ? .degraded : .catastrophic
    }
}

/// What one judge saw lately: loss in % over the last two seconds and how many packets were due in them, and a
/// round-trip time in ms; nil where it measured nothing.
public struct QualitySample: Sendable, Equatable {
    public var lossPercent: Double?
    public var packets: Int?
    public var rttMs: Double?
    /// RFC 3550 interarrival jitter, ms: shown with the figures, not judged (the playout buffer absorbs it; what it
    /// cannot absorb arrives late and counts as loss at the ends).
    public var jitterMs: Double?
    /// Loss over the last second alone, when that second held enough packets to judge (`LossMeter.Reading`).
    public var recentLossPercent: Double?
    public var recentPackets: Int?
    public init(lossPercent: Double?, packets: Int? = nil, rttMs: Double?, jitterMs: Double? = nil,
                recentLossPercent: Double? = nil, recentPackets: Int? = nil) {
        self.lossPercent = lossPercent
        self.packets = packets
        self.rttMs = rttMs
        self.jitterMs = jitterMs
        self.recentLossPercent = recentLossPercent
        self.recentPackets = recentPackets
    }

    /// With a loss meter's reading for the loss figures.
    public init(_ reading: LossMeter.Reading?, rttMs: Double?, jitterMs: Double?) {
        self.init(lossPercent: reading?.percent, packets: reading?.due, rttMs: rttMs, jitterMs: jitterMs,
                  recentLossPercent: reading?.recentPercent, recentPackets: reading?.recentDue)
    }
}

/// One judge of a call's quality (a relay for the streams it carries, or an end for what it receives), pure: a
/// sample every `sampleMs` in, the tier it recommends out (docs/calls.md, "Quality"). Downgrades are quick (a critical
/// sample at once, degraded ones for two seconds); upgrades need a sustained good period, longer the higher the tier,
/// and a sample that is neither (between the thresholds) holds the tier where it is: hysteresis, so a loss rate
/// sitting at a threshold cannot make the call flap.
public struct QualityJudge: Sendable {
    /// Critical at loss ≥ 15 % or RTT ≥ 200 ms: down to catastrophic at once.
    public static let critical = (lossPercent: 15.0, rttMs: 200.0)
    /// Degraded at loss ≥ 5 % or RTT ≥ 100 ms: down to degraded once that held for `degradedForMs` (three one-second
    /// reports in a row).
    public static let degraded = (lossPercent: 5.0, rttMs: 100.0)
    public static let degradedForMs: Int64 = 2_000
    /// Upgrades, each once its condition held for its time without a break: well below critical (10 % / 150 ms) for
    /// 10 s, up to degraded; good (below 2 % / 80 ms) for 10 s, normal; excellent (below 1 % / 50 ms) for 30 s, good;
    /// studio (below 0.5 % / 30 ms) for 60 s, studio. Each bar sits well below the threshold that brings the tier
    /// down, so that loss at a threshold cannot pass both.
    /// How often a judge takes a sample: four times a second.
    public static let sampleMs: Int64 = 250

    public static let upgrades: [(tier: QualityTier, lossPercent: Double, rttMs: Double, forMs: Int64)] = [
        (.degraded, 10, 150, 10_000), (.normal, 2, 80, 10_000), (.good, 1, 50, 30_000), (.studio, 0.5, 30, 60_000),
    ]

    /// Never recommends above this (the tier the call started at).
    public let ceiling: QualityTier
    public private(set) var tier: QualityTier
    /// Why the tier is what it is, in words.
    public private(set) var why = "no figures yet"
    /// Since when every sample was degraded or worse.
    private var degradedSince: Int64?
    /// Since when each upgrade's condition (by its place in `upgrades`) has held without a break: inline (a relay
    /// keeps a judge for every call it carries).
    private var since = UpgradeClocks()

    public init(ceiling: QualityTier) {
        self.ceiling = ceiling
        tier = ceiling
    }

    /// Takes the latest figures (loss over the last two seconds); true when the recommended tier changed.
    public mutating func sample(_ s: QualitySample, now: Int64) -> Bool {
        guard s.lossPercent != nil || s.rttMs != nil else { return false }
        let (loss, rtt) = (s.lossPercent ?? 0, s.rttMs ?? 0)
        // Made only when the tier changes (a relay samples every call it carries four times a second).
        func figures() -> String { Self.describe(s) }
        let before = tier
        let recentCritical = s.recentLossPercent.map { $0 >= Self.bar(Self.critical.lossPercent, s.recentPackets, errors: 3) } ?? false
        if loss >= Self.bar(Self.critical.lossPercent, s.packets, errors: 2) || recentCritical || rtt >= Self.critical.rttMs {
            degradedSince = degradedSince ?? now
            let recent = recentCritical ? s.recentLossPercent.map { ", \(Self.format($0)) % in the last second" } ?? "" : ""
            if tier > .catastrophic { (tier, why) = (.catastrophic, "critical: \(figures())\(recent)") }
        } else if loss >= Self.bar(Self.degraded.lossPercent, s.packets, errors: 1) || rtt >= Self.degraded.rttMs {
            let since = degradedSince ?? now
            degradedSince = since
            if now - since >= Self.degradedForMs, tier > .degraded {
                (tier, why) = (.degraded, "degraded for \((now - since) / 1000 + 1) s: \(figures())")
            }
        } else {
            degradedSince = nil
        }
        for (index, step) in Self.upgrades.enumerated() {
            guard loss < step.lossPercent && rtt < step.rttMs else {
                since[index] = nil
                continue
            }
            let start = since[index] ?? now
            since[index] = start
            if now - start >= step.forMs, step.tier > tier, step.tier <= ceiling {
                (tier, why) = (step.tier, "\(step.tier.name) conditions for \((now - start) / 1000) s: \(figures())")
            }
        }
        return tier != before
    }

    /// A downgrade threshold as measured over `packets` packets: the threshold plus `errors` standard errors of a
    /// loss rate at the threshold, so that sampling noise alone does not pass it. A call has several judges, each
    /// sampling four times a second, and the call follows the weakest: the critical bar, which acts at once, takes
    /// two (15 % → 22.1 % over 100 packets: a true 10 % passes it about once in 10,000 samples), the degraded bar,
    /// which must hold for 2 s, one (5 % → 7.2 %). The last second alone, checked against the critical bar for a
    /// quicker step down when loss begins, takes three (→ 30.1 % over 50 packets: a true 10 % passes it about
    /// twice in 100,000 samples, a true 5 % never; 40 % loss passes it 0.75 s after it began, the two seconds'
    /// bar 1.1 s).
    static func bar(_ percent: Double, _ packets: Int?, errors: Double) -> Double {
        guard let packets, packets > 0 else { return percent }
        let p = percent / 100
        return percent + errors * 100 * (p * (1 - p) / Double(packets)).squareRoot()
    }

    static func describe(_ s: QualitySample) -> String {
        [s.lossPercent.map { "loss \(Self.format($0)) %" }, s.rttMs.map { "rtt \(Self.format($0)) ms" },
         s.jitterMs.map { "jitter \(Self.format($0)) ms" }].compactMap { $0 }.joined(separator: ", ")
    }

    private static func format(_ value: Double) -> String {
        let tenths = Int((value * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }
}

/// Loss of one RTP stream over the last two seconds, taken every `QualityJudge.sampleMs` (100 packets of a 20 ms
/// stream: one second's 50 are too few to tell 5 % from 15 %, and a loss rate sitting at a threshold would make the
/// judge flap). A relay counts from the sequence numbers it forwards (the RTP header is clear; SRTP encrypts only the
/// payload), and measures the jitter from the timestamps; an end adds its receiver's counts.
public struct LossMeter: Sendable {
    /// Windows the loss is taken over, two seconds' worth (each `QualityJudge.sampleMs`, 250 ms): one a lane of
    /// `Counts`.
    static let windows = Counts.scalarCount
    /// The counts of the last `windows` windows, oldest in lane 0, zeros before there were that many: kept inline,
    /// not in an array of their own (a relay keeps two meters a session). A count saturates at 65,535 in a window.
    typealias Counts = SIMD8<UInt16>
    private var highest: UInt16?
    private var expected = 0
    private var received = 0
    private var previousExpected = Counts()
    private var previousReceived = Counts()
    /// RFC 3550 §6.4.1 interarrival jitter of the stream (48 kHz RTP clock), ms, and the last packet's clocks.
    private var jitter: Double?
    private var last: (timestamp: UInt32, arrivalMs: Int64)?

    public init() {}

    /// One packet; with its RTP timestamp and arrival time, the jitter too.
    public mutating func note(sequence: UInt16, timestamp: UInt32? = nil, arrivalMs: Int64? = nil) {
        if let timestamp, let arrivalMs {
            if let last {
                let d = Double(arrivalMs - last.arrivalMs) - Double(Int32(bitPattern: timestamp &- last.timestamp)) / 48
                jitter = (jitter ?? 0) + (abs(d) - (jitter ?? 0)) / 16
            }
            last = (timestamp, arrivalMs)
        }
        received += 1
        guard let h = highest else {
            highest = sequence
            expected += 1
            return
        }
        let ahead = Int(Int16(bitPattern: sequence &- h))
        if ahead > 0 {
            expected += ahead
            highest = sequence
        }
    }

    /// Counts taken elsewhere (an end's receiver): packets due and packets that came.
    public mutating func add(expected: Int, received: Int) {
        self.expected += expected
        self.received += received
    }

    /// Loss in % over `due` packets, and the stream's jitter (nil without timestamps).
    public struct Reading: Sendable, Equatable {
        public var percent: Double
        public var due: Int
        public var jitterMs: Double?
        /// The loss over the last second alone, when at least `recentMinimum` packets were due in it (a 20 ms
        /// stream while it speaks), and how many.
        public var recentPercent: Double?
        public var recentDue: Int = 0
    }
    static let recentMinimum = 40

    /// The loss over this window and the ones before it (nil when fewer than `minimum` packets were due: a stream in
    /// DTX sends one packet every 400 ms, five in two seconds, and its silence must not freeze the judge), and a new
    /// window.
    public mutating func take(minimum: Int = 4) -> Reading? {
        previousExpected = Self.shifted(previousExpected, expected)
        previousReceived = Self.shifted(previousReceived, received)
        (expected, received) = (0, 0)
        func loss(_ due: Int, _ received: Int) -> (percent: Double, due: Int) {
            (due == 0 ? 0 : 100 * Double(max(0, due - received)) / Double(due), due)
        }
        let all = loss(Self.sum(previousExpected), Self.sum(previousReceived))
        let recent = loss(Self.sum(previousExpected.highHalf), Self.sum(previousReceived.highHalf))
        guard all.due >= minimum else { return nil }
        return Reading(percent: all.percent, due: all.due, jitterMs: jitter,
                       recentPercent: recent.due >= Self.recentMinimum ? recent.percent : nil, recentDue: recent.due)
    }
}

/// One optional clock for each of `QualityJudge.upgrades`, inline.
struct UpgradeClocks: Sendable {
    private var clocks: (Int64?, Int64?, Int64?, Int64?) = (nil, nil, nil, nil)

    subscript(index: Int) -> Int64? {
        get {
            switch index {
            case 0: clocks.0
            case 1: clocks.1
            case 2: clocks.2
            case 3: clocks.3
            default: preconditionFailure("QualityJudge has four upgrades")
            }
        }
        set {
            switch index {
            case 0: clocks.0 = newValue
            case 1: clocks.1 = newValue
            case 2: clocks.2 = newValue
            case 3: clocks.3 = newValue
            default: preconditionFailure("QualityJudge has four upgrades")
            }
        }
    }
}

extension LossMeter {
    /// The counts with the oldest window dropped and `count` as the newest.
    private static func shifted(_ c: Counts, _ count: Int) -> Counts {
        Counts(c[1], c[2], c[3], c[4], c[5], c[6], c[7], UInt16(clamping: count))
    }

    private static func sum<V: SIMD>(_ counts: V) -> Int where V.Scalar == UInt16 { counts.indices.reduce(0) { $0 + Int(counts[$1]) } }
}

/// A relay's judgement of a call it carries, signed with its node key, sent to both ends (inner tag 0x42): the tier
/// it recommends and the figures behind it. The ends take the weakest of the path's verdicts and their own.
public struct QualityVerdict: Equatable, Sendable {
    public var call: UInt64
    public var tier: QualityTier
    /// The worse direction's loss over the last two seconds, in 0.1 %; the RTT of this relay's slower link, ms.
    public var lossPermille: UInt16
    public var rttMs: UInt16
    /// The worst jitter of the call's streams here, 0.1 ms.
    public var jitterTenths: UInt16
    /// Grows with each verdict the relay sends for the call (its clock in ms, kept growing).
    public var counter: UInt64
    public var signature: Signature

    public static func sign(call: UInt64, tier: QualityTier, sample: QualitySample, counter: UInt64, key: PrivateKey) -> QualityVerdict {
        let loss = UInt16(clamping: Int(((sample.lossPercent ?? 0) * 10).rounded()))
        let rtt = UInt16(clamping: Int((sample.rttMs ?? 0).rounded()))
        let jitter = UInt16(clamping: Int(((sample.jitterMs ?? 0) * 10).rounded()))
        let digest = Self.digest(call: call, tier: tier, loss: loss, rtt: rtt, jitter: jitter, counter: counter)
        return QualityVerdict(call: call, tier: tier, lossPermille: loss, rttMs: rtt, jitterTenths: jitter, counter: counter,
                              signature: key.sign(digest: digest))
    }

    public var signer: WalletAddress? {
        signature.recoverAddress(digest: Self.digest(call: call, tier: tier, loss: lossPermille, rtt: rttMs, jitter: jitterTenths,
                                                     counter: counter))
    }

    /// "loss 12.3 %, rtt 40 ms, jitter 2.5 ms".
    public var figures: String {
        "loss \(lossPermille / 10).\(lossPermille % 10) %, rtt \(rttMs) ms, jitter \(jitterTenths / 10).\(jitterTenths % 10) ms"
    }

    static func digest(call: UInt64, tier: QualityTier, loss: UInt16, rtt: UInt16, jitter: UInt16, counter: UInt64) -> [UInt8] {
        var w = ByteWriter(capacity: 48)
        w.write(bytes: Array("meshcall/v1/verdict".utf8))
        w.write(call)
        w.write(UInt8(tier.rawValue))
        w.write(loss)
        w.write(rtt)
        w.write(jitter)
        w.write(counter)
        return Keccak.hash256(w.bytes)
    }

    /// call u64, tier u8, loss u16 (0.1 %), rtt u16 (ms), jitter u16 (0.1 ms), counter u64, signature (65 bytes).
    public func serialize() -> [UInt8] {
        var w = ByteWriter(capacity: 86)
        w.write(call)
        w.write(UInt8(tier.rawValue))
        w.write(lossPermille)
        w.write(rttMs)
        w.write(jitterTenths)
        w.write(counter)
        w.write(bytes: signature.bytes)
        return w.bytes
    }

    public init?(parsing bytes: [UInt8]) {
        var r = ByteReader(bytes)
        guard let call = r.readUInt64(), let tier = r.readUInt8().flatMap({ QualityTier(rawValue: Int($0)) }),
              let loss = r.readUInt16(), loss <= 1_000, let rtt = r.readUInt16(), let jitter = r.readUInt16(),
              let counter = r.readUInt64(), let signature = r.readBytes(Signature.byteCount).flatMap(Signature.init(bytes:)),
              r.isAtEnd else { return nil }
        self.init(call: call, tier: tier, lossPermille: loss, rttMs: rtt, jitterTenths: jitter, counter: counter, signature: signature)
    }

    init(call: UInt64, tier: QualityTier, lossPermille: UInt16, rttMs: UInt16, jitterTenths: UInt16, counter: UInt64, signature: Signature) {
        self.call = call
        self.tier = tier
        self.lossPermille = lossPermille
        self.rttMs = rttMs
        self.jitterTenths = jitterTenths
        self.counter = counter
        self.signature = signature
    }
}
