/// Fixed-delay playout keyed by RTP sequence number (the receiver's jitter buffer). The first packet of a
/// stream is held for the target delay; after that every tick plays the next sequence number. Pure: arrival
/// and tick times come in as parameters, and decoding is the caller's job, so an adaptive (NetEq-style)
/// buffer can replace this one behind the same two calls, `insert` and `nextDecision`.
struct PlayoutBuffer {
    /// What to play for one 20 ms slot.
    enum Decision: Equatable {
        /// No packet has arrived yet.
        case silence
        /// The slot's own packet.
        case play([UInt8])
        /// The slot's packet is missing and the next one is here: rebuild the slot from its FEC data.
        case recover(from: [UInt8])
        /// The slot's packet is missing (lost, late, or the sender paused): conceal.
        case conceal
    }

    /// RFC 3550 appendix A.1's MAX_MISORDER: a packet further behind the newest one starts a restart probation.
    static let maxMisorder: Int64 = 100
    /// A packet further ahead of the playout point (5 s) starts a restart probation; this also bounds memory.
    static let maxAhead: Int64 = 250

    private struct Packet {
        let payload: [UInt8]
        let arrivalMs: Int64
    }

    /// One sender's sequence space: a new SSRC, or a confirmed jump in sequence numbers, starts a new one.
    private struct Stream {
        let ssrc: UInt32
        /// Extended (wrap-free) sequence numbers.
        var highest: Int64
        var lowest: Int64
        var uniqueReceived = 0

        init(ssrc: UInt32, first: Int64) {
            self.ssrc = ssrc
            highest = first
            lowest = first
        }

        mutating func count(_ slot: Int64) {
            uniqueReceived += 1
            highest = max(highest, slot)
            lowest = min(lowest, slot)
        }

        /// The 64-bit sequence number nearest to `highest` with these low 16 bits.
        func extend(_ sequence: UInt16) -> Int64 {
            highest + Int64(Int16(bitPattern: sequence &- UInt16(truncatingIfNeeded: highest)))
        }

        /// RFC 3550 §6.4.1: expected minus received, so late packets are not lost and duplicates not received.
        var lost: Int { max(0, Int(highest - lowest + 1) - uniqueReceived) }
    }

    private let targetMs: Int64
    private var stream: Stream?
    /// A packet out of range for the current stream; the next in sequence after it confirms a restart.
    private var probation: (sequence: UInt16, timestamp: UInt32, packet: Packet)?
    private var pending: [Int64: Packet] = [:]
    /// Packets whose slots passed while nothing newer was buffered: the stream fell behind the playout point
    /// (the sender paused, or the path got slower). If nothing newer arrives before the next tick, playout
    /// re-anchors on them.
    private var behind: [Int64: Packet] = [:]
    /// Slots played from their own packet, within `maxMisorder` of the playout point, to tell duplicates.
    private var played: Set<Int64> = []
    private var next: Int64 = 0
    private var startMs: Int64 = 0
    private var playedSinceAnchor = false
    private var everPlayed = false
    /// The newest slot played from packet data (its own packet or FEC).
    private var lastUsed = Int64.min
    private var lastTransit: (arrivalMs: Int64, timestamp: UInt32)?

    private var lostInEndedStreams = 0
    private(set) var late = 0
    private(set) var duplicates = 0
    private(set) var jitterMs = 0.0
    private(set) var currentDelayMs = 0.0
    private var delaySumMs = 0.0
    private var delayCount = 0

    init(targetMs: Int) {
        self.targetMs = Int64(targetMs)
    }

    var lost: Int { lostInEndedStreams + (stream?.lost ?? 0) }
    var meanDelayMs: Double { delayCount == 0 ? 0 : delaySumMs / Double(delayCount) }

    /// Files an arriving packet.
    mutating func insert(sequence: UInt16, timestamp: UInt32, ssrc: UInt32, payload: [UInt8], arrivalMs: Int64) {
        let packet = Packet(payload: payload, arrivalMs: arrivalMs)
        guard let current = stream, current.ssrc == ssrc else {
            restart(ssrc: ssrc, sequence: sequence, timestamp: timestamp, packet: packet)
            return
        }
        let slot = current.extend(sequence)
        guard slot >= current.highest - Self.maxMisorder, slot < next + Self.maxAhead else {
            if let candidate = probation, candidate.sequence &+ 1 == sequence {
                restart(ssrc: ssrc, sequence: candidate.sequence, timestamp: candidate.timestamp,
                        packet: candidate.packet)
                insert(sequence: sequence, timestamp: timestamp, ssrc: ssrc, payload: payload, arrivalMs: arrivalMs)
            } else {
                probation = (sequence, timestamp, packet)
            }
            return
        }
        probation = nil
        guard pending[slot] == nil, behind[slot] == nil, !played.contains(slot) else {
            duplicates += 1
            return
        }
        record(slot: slot, timestamp: timestamp, arrivalMs: arrivalMs)
        if slot >= next {
            pending[slot] = packet
            late += behind.count
            behind = [:]
        } else if slot > lastUsed, !playedSinceAnchor {
            next = slot  // it overtook the packet playout was anchored on
            pending[slot] = packet
        } else if slot > lastUsed, pending.isEmpty {
            behind[slot] = packet
        } else {
            late += 1
        }
    }

    /// What to play for the tick at `nowMs`; the owner ticks every 20 ms.
    mutating func nextDecision(nowMs: Int64) -> Decision {
        guard stream != nil else { return .silence }
        if let first = behind.keys.min() {
            let arrivalMs = behind.values.map(\.arrivalMs).min() ?? nowMs
            pending = behind
            behind = [:]
            anchor(at: first, arrivalMs: arrivalMs)
        }
        guard nowMs >= startMs else { return everPlayed ? .conceal : .silence }
        playedSinceAnchor = true
        everPlayed = true
        let slot = next
        next += 1
        played.remove(slot - Self.maxMisorder)
        if let packet = pending.removeValue(forKey: slot) {
            played.insert(slot)
            lastUsed = slot
            let delay = Double(nowMs - packet.arrivalMs)
            currentDelayMs = delay
            delaySumMs += delay
            delayCount += 1
            return .play(packet.payload)
        }
        if let following = pending[slot + 1] {
            lastUsed = slot
            return .recover(from: following.payload)
        }
        return .conceal
    }

    /// Starts a new stream with this packet as its first.
    private mutating func restart(ssrc: UInt32, sequence: UInt16, timestamp: UInt32, packet: Packet) {
        lostInEndedStreams += stream?.lost ?? 0
        let slot = Int64(sequence)
        stream = Stream(ssrc: ssrc, first: slot)
        probation = nil
        pending = [slot: packet]
        behind = [:]
        played = []
        lastUsed = .min
        lastTransit = nil
        anchor(at: slot, arrivalMs: packet.arrivalMs)
        record(slot: slot, timestamp: timestamp, arrivalMs: packet.arrivalMs)
    }

    /// Playout (re)starts with `slot`, the target delay after `arrivalMs`.
    private mutating func anchor(at slot: Int64, arrivalMs: Int64) {
        next = slot
        startMs = arrivalMs + targetMs
        playedSinceAnchor = false
    }

    /// Counts a first arrival and updates the RFC 3550 §6.4.1 interarrival jitter.
    private mutating func record(slot: Int64, timestamp: UInt32, arrivalMs: Int64) {
        stream?.count(slot)
        if let last = lastTransit {
            let mediaMs = Double(Int32(bitPattern: timestamp &- last.timestamp)) * 1000 / Double(Audio.sampleRate)
            let difference = abs(Double(arrivalMs - last.arrivalMs) - mediaMs)
            jitterMs += (difference - jitterMs) / 16
        }
        lastTransit = (arrivalMs, timestamp)
    }
}
