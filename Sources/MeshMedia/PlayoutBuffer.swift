/// The receiver's jitter buffer and playout timeline (NetEq-style). Packets are filed by extended RTP sequence
/// number and played by RTP timestamp: `endTs` is the sender timestamp of the next sample to decode. Each call
/// to `decide` says how to produce the next stretch of audio; the receiver decodes and keeps the samples in
/// its sync buffer until they are played. Pure: arrival and tick times come in as parameters.
///
/// Sequence numbers tell loss from silence: a timestamp gap before the next packet in sequence is the sender's
/// DTX (or a pause) and is filled with comfort noise, which is where the adaptive buffer moves its delay; a
/// gap in sequence numbers is loss (FEC or concealment).
struct PlayoutBuffer {
    /// How to produce the next stretch of audio.
    enum Decision: Equatable {
        /// Nothing to play yet: zeros.
        case silence(samples: Int)
        /// Decode the packet; `.merge` is the first packet after concealment or comfort noise.
        case normal(Packet), merge(Packet)
        /// Decode the packet and shorten / lengthen it by one pitch period (time-stretch).
        case accelerate(Packet), decelerate(Packet)
        /// The packet before `packet` is lost: rebuild it from `packet`'s FEC data.
        case fec(from: Packet, samples: Int)
        /// Conceal (the decoder's packet loss concealment).
        case expand(samples: Int)
        /// Comfort noise: the sender is in DTX (decoder concealment after a DTX packet).
        case comfortNoise(samples: Int)
    }

    struct Packet: Equatable {
        let sequence: Int64
        let timestamp: Int64
        let samples: Int
        let payload: [UInt8]
        let arrivalMs: Int64
        /// A redundant copy from a later packet (`RedundantPayload`), not the packet itself.
        var recovered = false
        /// The sender's VAD verdict (RFC 6464's V bit), nil without one: false is a hangover or comfort-noise
        /// packet, true speech.
        var voice: Bool?

        var end: Int64 { timestamp + Int64(samples) }
        var isDTX: Bool { MediaSender.isDTX(payload) }
    }

    /// RFC 3550 appendix A.1's MAX_MISORDER: a packet further behind the newest one starts a restart probation.
    static let maxMisorder: Int64 = 100
    /// A packet further ahead of the playout point (5 s) starts a restart probation; this also bounds memory.
    static let maxAhead: Int64 = 250
    /// A fixed buffer that has grown this far past its target drops its oldest packets back to the target.
    static let fixedOverflowMs = 40.0
    /// The buffer level filter's smoothing per tick (NetEq's BufferLevelFilter, about 0.4 s).
    static let levelSmoothing = 0.95
    /// The loss rate (packets lost per packet, averaged over about 200 packets) from which the path counts as
    /// lossy: missing packets are concealed in place, and FEC and redundant copies earn extra delay. Each packet
    /// of that delay must pay for itself: the buffer starts waiting k packets past a lost one when this share of
    /// the packets is lost with k − 1 more lost right after it (which nothing nearer rebuilds), and stops below
    /// half of it.
    static let lossyThreshold = 0.01
    static let lossSmoothing = 0.995
    /// A sequence number still missing this many packets after the newest one is counted lost (reordered
    /// packets that arrive within it are not loss).
    static let lossHorizon: Int64 = 10
    /// Packets in a row without redundant copies after which the sender counts as having stopped adding them.
    static let redundancyMemoryPackets = 50
    /// The largest copy distance the target makes room for (a peer cannot push the delay further).
    static let maxRedundancyDistance = 3
    /// Below this skew the drift compensation rests (the level control absorbs it).
    static let minimumDriftPpm = 10.0

    private enum Outcome { case silence, speech, concealment, comfortNoise }

    /// One sender's sequence and timestamp space: a new SSRC, or a confirmed jump, starts a new one.
    private struct Stream {
        let ssrc: UInt32
        var highest: Int64
        var lowest: Int64
        var highestTimestamp: Int64
        var uniqueReceived = 0

        /// The 64-bit sequence number nearest to `highest` with these low 16 bits.
        func extend(_ sequence: UInt16) -> Int64 {
            highest + Int64(Int16(bitPattern: sequence &- UInt16(truncatingIfNeeded: highest)))
        }

        /// The 64-bit timestamp nearest to `highestTimestamp` with these low 32 bits.
        func extend(timestamp: UInt32) -> Int64 {
            highestTimestamp + Int64(Int32(bitPattern: timestamp &- UInt32(truncatingIfNeeded: highestTimestamp)))
        }

        /// RFC 3550 §6.4.1: expected minus received, so late packets are not lost and duplicates not received.
        var lost: Int { max(0, expected - uniqueReceived) }
        var expected: Int { Int(highest - lowest + 1) }
    }

    let mode: PlayoutMode
    private let initialTargetMs: Double
    private let ceilingMs: Double
    private let useFEC: Bool
    private var estimator: DelayEstimator
    private var drift = DriftEstimator()
    private var stream: Stream?
    private var probation: (sequence: UInt16, timestamp: UInt32, payload: [UInt8], arrivalMs: Int64, samples: Int,
                            voice: Bool?)?
    /// Waiting packets, by sequence number.
    private var pending: [Int64: Packet] = [:]
    /// Sequence numbers seen lately (to tell duplicates).
    private var seen: Set<Int64> = []
    private var started = false
    private var holdUntilMs: Int64 = 0
    private var endTs: Int64 = 0
    /// The last packet decoded (or skipped) and whether it was a DTX packet.
    private var lastSequence: Int64 = .min
    private var lastWasDTX = false
    private var outcome = Outcome.silence
    /// Concealment played in place of a packet that had not arrived, without moving the timeline.
    private var waitedSamples: Int64 = 0
    private var packetMs = Double(Audio.frameMs)
    private var filteredLevelMs: Double?
    private var lastTickMs: Int64?
    /// The target at the latest tick.
    private(set) var currentTargetMs = 0.0
    /// Samples the drift compensation still has to remove (positive) or insert (negative).
    private var driftDebt = 0.0
    private var lastTransit: (arrivalMs: Int64, timestamp: UInt32)?
    /// Packets lost per packet, and lost in runs of two or more per packet (recent averages).
    private var recentLoss = 0.0
    private var recentBurstLoss = 0.0
    /// Per packet, recent averages: packets lost with at least 1, 2, … `maxRedundancyDistance` more lost right
    /// after them (the loss only a packet 2, 3, … `maxRedundancyDistance` + 1 later can rebuild).
    private var recentDeepLoss = [Double](repeating: 0, count: Self.maxRedundancyDistance)
    /// 1 + the most packets lost right after a lost one that the buffer waits to rebuild (`recoveryPackets`).
    private var lossDepth: Int64 = 1
    /// The newest sequence number whose fate (received or lost) the loss averages have taken in.
    private var lossAccountedThrough: Int64?
    private var lossRun = 0
    /// The distance of the redundant copies the sender adds (0: none), and packets without copies since.
    private(set) var redundancyDistance: Int64 = 0
    private var packetsWithoutCopies = 0

    private var lostInEndedStreams = 0
    private var expectedInEndedStreams = 0
    private(set) var late = 0
    private(set) var duplicates = 0
    private(set) var jitterMs = 0.0

    init(config: MediaConfig) {
        mode = config.playout
        ceilingMs = Double(config.playoutCeilingMs)
        useFEC = config.fec
        switch config.playout {
        case .adaptive: initialTargetMs = Double(config.playoutTargetMs)
        case .fixed(let ms): initialTargetMs = Double(ms)
        }
        estimator = DelayEstimator(quantile: config.delayQuantile,
                                   initialDelayMs: max(0, initialTargetMs - Double(Audio.frameMs)), ceilingMs: ceilingMs)
    }

    var lost: Int { lostInEndedStreams + (stream?.lost ?? 0) }
    /// Packets waiting to be played.
    var waiting: Int { pending.count }
    var expected: Int { expectedInEndedStreams + (stream?.expected ?? 0) }
    var spikes: Int { estimator.spikes }
    var driftPpm: Double? { drift.ppm }

    /// The path loses packets: at least `lossyThreshold` of them lately.
    private var lossy: Bool { recentLoss >= Self.lossyThreshold }

    /// The loss the receiver reports to the sender (`LossReport`).
    var lossReport: LossReport {
        LossReport(lossPercent: 100 * recentLoss, burstLossPercent: 100 * recentBurstLoss)
    }

    /// The delay the buffer aims to hold at `nowMs`, ms: an adaptive buffer adds `recoveryPackets` to the
    /// jitter's target.
    func targetMs(nowMs: Int64) -> Double {
        switch mode {
        case .adaptive:
            let target = estimator.targetMs(nowMs: nowMs, packetMs: packetMs)
            let recovery = recoveryPackets
            guard recovery > 0 else { return target }
            return min(target + Double(recovery) * packetMs, ceilingMs - packetMs)
        case .fixed:
            return initialTargetMs
        }
    }

    /// How many packets past a lost one an adaptive buffer holds so that a later packet can rebuild it. The
    /// packets that can: with FEC the next one (its FEC data); with redundant copies at distance d the one d
    /// later, and with FEC also the one d + 1 later (the copy's own FEC data rebuilds the packet before it). A
    /// lost packet with j more lost right after it needs one at least j + 1 later. The buffer waits for the
    /// nearest rebuilder that covers `lossDepth` (the deepest such loss common enough, `lossyThreshold`), and
    /// not at all on a path that is not lossy.
    var recoveryPackets: Int64 {
        guard lossy else { return 0 }
        var rebuilders: [Int64] = useFEC ? [1] : []
        if redundancyDistance > 0 { rebuilders.append(redundancyDistance) }
        if redundancyDistance > 0, useFEC { rebuilders.append(redundancyDistance + 1) }
        guard let farthest = rebuilders.max() else { return 0 }
        return rebuilders.filter { $0 >= lossDepth }.min() ?? farthest
    }

    /// 1 + the most packets lost right after a lost one, for at least `share` of the packets lately.
    private func deepestLoss(atLeast share: Double) -> Int64 {
        recentDeepLoss.lastIndex { $0 >= share }.map { Int64($0) + 2 } ?? 1
    }

    /// Files an arriving packet of `samples` samples; `voice`: the sender's VAD verdict, if it sent one. True
    /// when the packet was filed for playout (not a duplicate, late, or held on restart probation).
    @discardableResult
    mutating func insert(sequence: UInt16, timestamp: UInt32, ssrc: UInt32, payload: [UInt8], samples: Int,
                         arrivalMs: Int64, voice: Bool? = nil) -> Bool {
        guard let current = stream, current.ssrc == ssrc else {
            restart(ssrc: ssrc, sequence: sequence, timestamp: timestamp, payload: payload, samples: samples,
                    arrivalMs: arrivalMs, voice: voice)
            return true
        }
        let slot = current.extend(sequence)
        guard inWindow(slot, of: current) else {
            if let candidate = probation, candidate.sequence &+ 1 == sequence {
                restart(ssrc: ssrc, sequence: candidate.sequence, timestamp: candidate.timestamp,
                        payload: candidate.payload, samples: candidate.samples, arrivalMs: candidate.arrivalMs,
                        voice: candidate.voice)
                return insert(sequence: sequence, timestamp: timestamp, ssrc: ssrc, payload: payload,
                              samples: samples, arrivalMs: arrivalMs, voice: voice)
            }
            probation = (sequence, timestamp, payload, arrivalMs, samples, voice)
            return false
        }
        probation = nil
        guard !seen.contains(slot) else {
            duplicates += 1
            return false
        }
        seen.insert(slot)
        let packet = Packet(sequence: slot, timestamp: current.extend(timestamp: timestamp), samples: samples,
                            payload: payload, arrivalMs: arrivalMs, voice: voice)
        record(packet, rtpTimestamp: timestamp)
        accountLoss()
        // Sequence numbers far behind the newest are neither duplicates nor loss any more: forget them.
        if let newest = stream?.highest, seen.count > 4 * Int(Self.maxMisorder) {
            seen = seen.filter { $0 >= newest - 2 * Self.maxMisorder }
        }
        if slot <= lastSequence {
            late += 1
            return false
        }
        pending[slot] = packet
        return true
    }

    /// Files a redundant copy of an earlier packet (carried by a later one). Kept only when that packet has not
    /// arrived and its time has not passed; it does not count as received nor feed the delay estimators.
    mutating func insertRecovered(sequence: UInt16, timestamp: UInt32, ssrc: UInt32, payload: [UInt8],
                                  samples: Int, arrivalMs: Int64) {
        guard let current = stream, current.ssrc == ssrc else { return }
        let slot = current.extend(sequence)
        guard inWindow(slot, of: current), slot >= current.lowest, slot > lastSequence, slot < current.highest,
              !seen.contains(slot), pending[slot] == nil
        else { return }
        pending[slot] = Packet(sequence: slot, timestamp: current.extend(timestamp: timestamp), samples: samples,
                               payload: payload, arrivalMs: arrivalMs, recovered: true)
    }

    /// Not too far behind the newest packet (else a restart probation) nor ahead of the playout point.
    private func inWindow(_ slot: Int64, of stream: Stream) -> Bool {
        let nextSlot = lastSequence == .min ? stream.lowest : lastSequence + 1
        return slot >= stream.highest - Self.maxMisorder && slot < nextSlot + Self.maxAhead
    }

    /// The waiting packet with the lowest sequence number.
    private var oldestPending: Packet? { pending.keys.min().flatMap { pending[$0] } }

    /// The latest packet carried redundant copies up to `distance` packets back (0: none). The sender counts as
    /// adding copies until a second's worth of packets in a row has none: a packet after a long pause carries no
    /// copy (nothing recent to copy), and the delay must not drop at every talk spurt's start.
    mutating func noteRedundancy(distance: Int) {
        if distance > 0 {
            redundancyDistance = Int64(min(distance, Self.maxRedundancyDistance))
            packetsWithoutCopies = 0
        } else {
            packetsWithoutCopies += 1
            if packetsWithoutCopies >= Self.redundancyMemoryPackets { redundancyDistance = 0 }
        }
    }

    /// Takes in the fate of every sequence number that fell `lossHorizon` behind the newest: received, or
    /// lost (and whether in a run of two or more).
    private mutating func accountLoss() {
        guard let current = stream else { return }
        let through = current.highest - Self.lossHorizon
        let accounted = lossAccountedThrough ?? current.lowest - 1
        var next = accounted + 1
        while next <= through {
            let lost = !seen.contains(next)
            recentLoss = Self.lossSmoothing * recentLoss + (1 - Self.lossSmoothing) * (lost ? 1 : 0)
            recentBurstLoss *= Self.lossSmoothing
            for index in recentDeepLoss.indices { recentDeepLoss[index] *= Self.lossSmoothing }
            if lost {
                lossRun += 1
            } else {
                if lossRun >= 2 { recentBurstLoss += (1 - Self.lossSmoothing) * Double(lossRun) }
                // Of a run of n, n − j packets have at least j more lost after them (index j − 1).
                for index in recentDeepLoss.indices where lossRun > index + 1 {
                    recentDeepLoss[index] += (1 - Self.lossSmoothing) * Double(lossRun - index - 1)
                }
                lossRun = 0
            }
            next += 1
        }
        lossAccountedThrough = max(accounted, through)
        let held = min(lossDepth, deepestLoss(atLeast: Self.lossyThreshold / 2))
        lossDepth = max(deepestLoss(atLeast: Self.lossyThreshold), held)
    }

    /// Once per tick, before `decide`: advances the level filter and the drift compensation.
    mutating func tick(nowMs: Int64, bufferedSamples: Int) {
        guard started, lastTickMs != nowMs else { return }
        lastTickMs = nowMs
        currentTargetMs = targetMs(nowMs: nowMs)
        // The level is filtered over speech only: in comfort noise it includes the silence up to the next packet.
        let level = levelMs(bufferedSamples: bufferedSamples)
        filteredLevelMs = outcome == .comfortNoise ? nil
            : filteredLevelMs.map { Self.levelSmoothing * $0 + (1 - Self.levelSmoothing) * level } ?? level
        if case .adaptive = mode, let ppm = drift.ppm, abs(ppm) >= Self.minimumDriftPpm {
            driftDebt += ppm * 1e-6 * Double(Audio.frameSamples)
            driftDebt = min(max(driftDebt, -Double(TimeStretch.maxPeriod)), Double(TimeStretch.maxPeriod))
        }
    }

    /// The receiver stretched (positive: removed, negative: inserted) this many samples. A stretch in the
    /// direction the drift compensation owes pays the debt down to zero, never past it (an overshoot would be
    /// owed back by the opposite stretch, and the two would alternate); one the other way leaves it alone.
    mutating func stretched(removing samples: Int) {
        let removed = Double(samples)
        if driftDebt > 0, removed > 0 {
            driftDebt = max(0, driftDebt - removed)
        } else if driftDebt < 0, removed < 0 {
            driftDebt = min(0, driftDebt - removed)
        }
    }

    /// Media buffered ahead of playout: the receiver's decoded samples plus the packets up to the newest.
    func levelMs(bufferedSamples: Int) -> Double {
        let newest = pending.values.reduce(endTs) { max($0, $1.end) }
        return Double(bufferedSamples + Int(max(0, newest - endTs))) / Double(Audio.samplesPerMs)
    }

    /// How to produce the next audio at `nowMs`; `bufferedSamples` are decoded and not yet played. The
    /// receiver calls this until it has a frame to play.
    mutating func decide(nowMs: Int64, bufferedSamples: Int) -> Decision {
        guard stream != nil else { return .silence(samples: Audio.frameSamples) }
        if !started {
            guard nowMs >= holdUntilMs, let first = oldestPending else {
                return .silence(samples: Audio.frameSamples)
            }
            started = true
            endTs = first.timestamp
            lastSequence = first.sequence - 1
        }
        if nowMs < holdUntilMs { return conceal(advance: false) }
        let playMs = Double(nowMs) + Double(bufferedSamples) / Double(Audio.samplesPerMs)
        dropLateAndOverdue(playMs: playMs, nowMs: nowMs, bufferedSamples: bufferedSamples)
        if nowMs < holdUntilMs { return conceal(advance: false) }
        let level = levelMs(bufferedSamples: bufferedSamples)
        let target = targetMs(nowMs: nowMs)
        // NetEq's band, with its top one packet above the target: at a tick the level also swings by a packet
        // with the arrival phase, which is no reason to stretch. While the buffer waits for rebuilders its bottom
        // is the packets it waits for and one more: a level that sat lower in the band (below the target by up to
        // a quarter) would have the copy d packets on arrive after its lost packet's turn at some arrival phases.
        let recovery = recoveryPackets
        let low = max(0.75 * target, target - 85, recovery > 0 ? Double(recovery + 1) * packetMs : 0)
        let high = max(target + packetMs, low + 20)
        guard let next = pending[lastSequence + 1] ?? oldestPending else {
            return underrun()
        }
        let gap = next.timestamp - endTs
        if gap <= 0 {
            if outcome == .comfortNoise, case .adaptive = mode, level < low { return comfortNoise(advance: false) }
            return play(next, playMs: playMs, level: level, low: low, high: high)
        }
        if next.sequence == lastSequence + 1 {
            // A timestamp gap with no sequence gap: the sender was silent (DTX or a pause).
            guard case .adaptive = mode else { return comfortNoise(advance: true, limit: gap) }
            if level > high {
                endTs += min(gap, Int64((level - target) * Double(Audio.samplesPerMs)))
                if endTs == next.timestamp {
                    return play(next, playMs: playMs, level: level, low: low, high: high)
                }
            }
            return comfortNoise(advance: level >= low, limit: next.timestamp - endTs)
        }
        // Packets are missing before `next`: on a path without loss an adaptive buffer waits for them (they may be
        // reordered) while it holds less than its target; then the concealment played while waiting stands in
        // for all but the last missing packet, which the next packet's FEC data rebuilds. On a lossy path a
        // missing packet is most likely lost: waiting would only insert audio, so it is concealed in place.
        if case .adaptive = mode, !lossy, level < target, waitedSamples < Int64(target * Double(Audio.samplesPerMs)) {
            waitedSamples += Int64(Audio.frameSamples)
            return conceal(advance: false)
        }
        let lastMissing = useFEC ? Int64(next.samples) : 0
        if waitedSamples > 0, gap > lastMissing {
            endTs += min(waitedSamples, gap - lastMissing)
            waitedSamples = 0
            return decide(nowMs: nowMs, bufferedSamples: bufferedSamples)
        }
        waitedSamples = 0
        if useFEC, gap == Int64(next.samples) {
            lastSequence = next.sequence - 1
            endTs += gap
            outcome = .speech
            return .fec(from: next, samples: next.samples)
        }
        return conceal(advance: true, limit: gap)
    }

    // MARK: decisions

    /// Decodes `packet`; an adaptive buffer stretches it when both the raw and the filtered level are past a
    /// threshold, or when the drift compensation owes samples and the level allows.
    private mutating func play(_ packet: Packet, playMs: Double, level: Double, low: Double, high: Double)
        -> Decision {
        pending[packet.sequence] = nil
        lastSequence = packet.sequence
        // Opus sends one packet every 400 ms during DTX: one that follows comfort noise keeps the DTX state. A
        // packet the sender's VAD called non-speech says so itself, even when the DTX packet before it was lost.
        // (A VAD verdict of speech does not end the DTX state: libopus may be in its own DTX while the VAD still
        // says speech, and its refreshes then carry V = 1.)
        lastWasDTX = packet.isDTX || packet.voice == false || (lastWasDTX && outcome == .comfortNoise)
        endTs = packet.end
        waitedSamples = 0
        let delay = playMs - Double(packet.arrivalMs)
        delays.add(delay)
        // The delay the listener hears is that of the latest speech. In DTX a refresh packet (every 400 ms)
        // waits out the comfort noise before it: that wait grows with the pause and delays nothing audible.
        if !lastWasDTX { currentDelayMs = delay }
        let after = outcome
        outcome = packet.isDTX ? .comfortNoise : .speech
        if after == .concealment || after == .comfortNoise { return .merge(packet) }
        guard case .adaptive = mode, !packet.isDTX else { return .normal(packet) }
        let filtered = filteredLevelMs ?? level
        let owed = Double(TimeStretch.minPeriod)
        // A stretch moves the level by up to one longest pitch period: it must not leave the band.
        let period = Double(TimeStretch.maxPeriod / Audio.samplesPerMs)
        if level - period >= low, min(level, filtered) > high || driftDebt >= owed { return .accelerate(packet) }
        if level + period <= high, max(level, filtered) < low || driftDebt <= -owed { return .decelerate(packet) }
        return .normal(packet)
    }

    /// Nothing to decode next: comfort noise in DTX; otherwise concealment, which the adaptive buffer on a
    /// loss-free path plays while it waits for the packet (the delay grows), and a fixed buffer or an adaptive
    /// one on a lossy path plays in the packet's place.
    private mutating func underrun() -> Decision {
        if lastWasDTX { return comfortNoise(advance: true) }
        if case .adaptive = mode, !lossy, Double(waitedSamples) < ceilingMs * Double(Audio.samplesPerMs) {
            waitedSamples += Int64(Audio.frameSamples)
            return conceal(advance: false)
        }
        return conceal(advance: true)
    }

    private mutating func conceal(advance: Bool, limit: Int64 = Int64(Audio.frameSamples)) -> Decision {
        // After a DTX packet the missing audio is the sender's silence (a lost DTX packet, or no packet at all).
        if outcome == .comfortNoise || lastWasDTX { return comfortNoise(advance: advance, limit: limit) }
        let samples = Self.concealSamples(limit)
        if advance { endTs += Int64(samples) }
        outcome = .concealment
        return .expand(samples: samples)
    }

    private mutating func comfortNoise(advance: Bool, limit: Int64 = Int64(Audio.frameSamples)) -> Decision {
        let samples = Self.concealSamples(limit)
        if advance { endTs += Int64(samples) }
        outcome = .comfortNoise
        return .comfortNoise(samples: samples)
    }

    /// Up to one frame, in whole 2.5 ms steps (what the Opus decoder conceals), at least 2.5 ms.
    private static func concealSamples(_ limit: Int64) -> Int {
        let step = Audio.sampleRate / 400
        return max(step, min(Audio.frameSamples, Int(limit) / step * step))
    }

    /// Drops packets whose time has passed, and packets that would play later than the ceiling (or, in a fixed
    /// buffer, beyond its target). The packet next in sequence re-anchors the timeline instead when it arrives
    /// behind it after comfort noise, or when nothing newer waits (the stream fell behind the playout point).
    private mutating func dropLateAndOverdue(playMs: Double, nowMs: Int64, bufferedSamples: Int) {
        let behind = pending.values.filter { $0.timestamp < endTs }
        let newerWaiting = behind.count < pending.count
        for packet in behind.sorted(by: { $0.sequence < $1.sequence }) {
            if packet.sequence == lastSequence + 1, outcome == .comfortNoise || !newerWaiting {
                reanchor(on: packet, nowMs: nowMs)
                return
            }
            pending[packet.sequence] = nil
            if !packet.recovered { late += 1 }
        }
        var fixedExcess: Double = 0
        if case .fixed(let ms) = mode {
            let level = levelMs(bufferedSamples: bufferedSamples)
            if level > Double(ms) + Self.fixedOverflowMs { fixedExcess = level - Double(ms) }
        }
        while let first = oldestPending,
              playMs - Double(first.arrivalMs) > ceilingMs || fixedExcess > 0 {
            pending[first.sequence] = nil
            if !first.recovered { late += 1 }
            fixedExcess -= Double(first.samples) / Double(Audio.samplesPerMs)
            lastSequence = max(lastSequence, first.sequence)
            endTs = max(endTs, first.end)
        }
    }

    /// Playout continues with `packet`, which arrived behind the timeline with nothing lost before it: an
    /// adaptive buffer plays it now, a fixed one holds it for its target delay.
    private mutating func reanchor(on packet: Packet, nowMs: Int64) {
        endTs = packet.timestamp
        waitedSamples = 0
        if case .fixed(let ms) = mode { holdUntilMs = max(nowMs, packet.arrivalMs + Int64(ms)) }
    }

    // MARK: streams and statistics

    private(set) var currentDelayMs = 0.0
    private(set) var delays = DelayStatistics()

    /// Starts a new stream with this packet as its first.
    /// The sender paused (a held call): what waits is dropped, and the next packet starts a new stream.
    mutating func endStream() {
        lostInEndedStreams += stream?.lost ?? 0
        expectedInEndedStreams += stream?.expected ?? 0
        stream = nil
        probation = nil
        pending = [:]
        seen = []
    }

    private mutating func restart(ssrc: UInt32, sequence: UInt16, timestamp: UInt32, payload: [UInt8], samples: Int,
                                  arrivalMs: Int64, voice: Bool?) {
        lostInEndedStreams += stream?.lost ?? 0
        expectedInEndedStreams += stream?.expected ?? 0
        let slot = Int64(sequence)
        let ts = Int64(timestamp)
        stream = Stream(ssrc: ssrc, highest: slot, lowest: slot, highestTimestamp: ts)
        probation = nil
        let packet = Packet(sequence: slot, timestamp: ts, samples: samples, payload: payload, arrivalMs: arrivalMs,
                            voice: voice)
        pending = [slot: packet]
        seen = [slot]
        lossAccountedThrough = nil
        lossRun = 0
        lastTransit = nil
        estimator.resetWindow()
        drift.reset()
        driftDebt = 0
        waitedSamples = 0
        lastWasDTX = false
        if started {
            endTs = ts
            lastSequence = slot - 1
        } else {
            holdUntilMs = arrivalMs + Int64(max(0, targetMs(nowMs: arrivalMs) - Double(samples / Audio.samplesPerMs)))
            if case .fixed(let ms) = mode { holdUntilMs = arrivalMs + Int64(ms) }
        }
        record(packet, rtpTimestamp: timestamp)
    }

    /// Counts a first arrival, feeds the delay and drift estimators and the RFC 3550 §6.4.1 jitter.
    private mutating func record(_ packet: Packet, rtpTimestamp: UInt32) {
        if var current = stream {
            current.uniqueReceived += 1
            current.highest = max(current.highest, packet.sequence)
            current.lowest = min(current.lowest, packet.sequence)
            current.highestTimestamp = max(current.highestTimestamp, packet.timestamp)
            stream = current
        }
        packetMs = Double(packet.samples) / Double(Audio.samplesPerMs)
        let mediaMs = Double(packet.timestamp) / Double(Audio.samplesPerMs)
        estimator.add(arrivalMs: packet.arrivalMs, mediaMs: mediaMs)
        drift.add(arrivalMs: packet.arrivalMs, mediaMs: mediaMs)
        if let last = lastTransit {
            let elapsedMs = Double(Int32(bitPattern: rtpTimestamp &- last.timestamp)) / Double(Audio.samplesPerMs)
            jitterMs += (abs(Double(packet.arrivalMs - last.arrivalMs) - elapsedMs) - jitterMs) / 16
        }
        lastTransit = (packet.arrivalMs, rtpTimestamp)
    }
}

/// Playout delays: the latest, the mean, and the 95th percentile (1 ms buckets).
struct DelayStatistics: Equatable {
    private var counts: [Int] = []
    private var sum = 0.0
    private(set) var count = 0

    mutating func add(_ ms: Double) {
        let bucket = max(0, Int(ms.rounded(.up)))
        if bucket >= counts.count { counts += [Int](repeating: 0, count: bucket - counts.count + 1) }
        counts[bucket] += 1
        sum += ms
        count += 1
    }

    var mean: Double { count == 0 ? 0 : sum / Double(count) }

    var p95: Double {
        guard count > 0 else { return 0 }
        var seen = 0
        for (ms, n) in counts.enumerated() {
            seen += n
            if Double(seen) >= 0.95 * Double(count) { return Double(ms) }
        }
        return Double(counts.count - 1)
    }
}
