@testable import MeshMedia
import MeshTestKit
import Testing

/// Properties of the playout buffer over random traces (seeded, so every run repeats): delays, loss,
/// reordering, duplicates, spikes, DTX pauses and 40 ms packets. The buffer is driven without a decoder: a
/// decision's samples are counted as the receiver would produce them. Each property is one a broken buffer
/// violates: packets vanish or are played twice, out of order or with another packet's media, loss and
/// duplicates are miscounted, a packet plays later than the ceiling, or a clean path is concealed.
@Suite struct PlayoutPropertyTests {
    struct Arrival {
        /// The packet's number in the trace (its sequence number before wrapping).
        let index: Int
        let sequence: UInt16
        let timestamp: UInt32
        let samples: Int
        let dtx: Bool
        let atMs: Int64
    }

    /// A random trace: packets of 20 or 40 ms, DTX pauses (one DTX packet, then a timestamp jump with no
    /// sequence gap) and network delay; when `impaired`, also jitter, bursts of loss, reordering, duplicates and
    /// spikes, else a constant delay.
    static func trace(seed: UInt64, packets: Int, impaired: Bool = true) -> [Arrival] {
        var random = SplitMix64(seed: seed)
        var arrivals: [Arrival] = []
        var timestamp = UInt32.random(in: 0...UInt32.max, using: &random)
        let firstSequence = UInt16.random(in: 0...UInt16.max, using: &random)
        var mediaMs: Int64 = 0
        let base = Int64.random(in: 5...60, using: &random)
        let jitter = impaired ? Int64.random(in: 0...80, using: &random) : 0
        var spikeUntil: Int64 = -1
        var burst = 0
        for index in 0..<packets {
            let samples = Bool.random(using: &random) && index % 7 < 2 ? 1920 : 960
            let dtx = Int.random(in: 0..<60, using: &random) == 0
            if impaired, Int.random(in: 0..<400, using: &random) == 0 {
                spikeUntil = mediaMs + Int64.random(in: 200...1500, using: &random)
            }
            if impaired, burst == 0, Int.random(in: 0..<40, using: &random) == 0 { burst = Int.random(in: 1...6, using: &random) }
            let delay = base + Int64.random(in: 0...jitter, using: &random) + (mediaMs < spikeUntil ? 400 : 0)
            if burst > 0 {
                burst -= 1
            } else {
                let arrival = Arrival(index: index, sequence: firstSequence &+ UInt16(truncatingIfNeeded: index),
                                      timestamp: timestamp, samples: samples, dtx: dtx, atMs: mediaMs + delay)
                arrivals.append(arrival)
                if impaired, Int.random(in: 0..<30, using: &random) == 0 {
                    arrivals.append(Arrival(index: index, sequence: arrival.sequence, timestamp: timestamp,
                                            samples: samples, dtx: dtx,
                                            atMs: arrival.atMs + Int64.random(in: 0...100, using: &random)))
                }
            }
            let pauseMs: Int64 = dtx ? Int64.random(in: 1...50, using: &random) * 20 : 0
            timestamp &+= UInt32(samples) + UInt32(pauseMs) * 48
            mediaMs += Int64(samples / 48) + pauseMs
        }
        return arrivals.sorted { $0.atMs < $1.atMs }
    }

    /// What happened to a trace played through a buffer.
    struct Run {
        /// The arrivals the buffer filed for playout, refused as late, refused as duplicates, and neither.
        var filed = 0, lateOnArrival = 0, duplicateOnArrival = 0, unaccounted = 0
        /// Packets dropped from the buffer as late while they waited.
        var droppedWaiting = 0
        /// The packets played, in order, with the playout delay of each.
        var played: [(packet: PlayoutBuffer.Packet, delayMs: Double)] = []
        /// Concealment and comfort noise decided while packets of the trace were still to be played.
        var concealedBeforeEnd = 0, comfortNoiseBeforeEnd = 0, silenceAfterStart = 0, fec = 0
        var buffer: PlayoutBuffer
    }

    /// Plays `arrivals` through a buffer, one 20 ms tick at a time, recording every insert and decision.
    static func play(_ arrivals: [Arrival], mode: PlayoutMode, ceilingMs: Int) -> Run {
        var config = MediaConfig()
        config.playout = mode
        config.playoutCeilingMs = ceilingMs
        var run = Run(buffer: PlayoutBuffer(config: config))
        let lastSequence = arrivals.max { $0.index < $1.index }?.sequence
        var buffered = 0
        var next = 0
        var lastPlayed = false
        let ticks = Int((arrivals.last?.atMs ?? 0) / 20) + 60
        for tick in 0..<ticks {
            let now = Int64(tick * 20)
            while next < arrivals.count, arrivals[next].atMs <= now {
                let a = arrivals[next]
                let (late, duplicates) = (run.buffer.late, run.buffer.duplicates)
                let filed = run.buffer.insert(sequence: a.sequence, timestamp: a.timestamp, ssrc: 1,
                                              payload: a.dtx ? [0x08] : [0x08, 1, 2, 3], samples: a.samples,
                                              arrivalMs: a.atMs)
                let lateNow = run.buffer.late - late, duplicateNow = run.buffer.duplicates - duplicates
                if filed { run.filed += 1 }
                run.lateOnArrival += lateNow
                run.duplicateOnArrival += duplicateNow
                if (filed ? 1 : 0) + lateNow + duplicateNow != 1 { run.unaccounted += 1 }
                next += 1
            }
            run.buffer.tick(nowMs: now, bufferedSamples: buffered)
            var decisions = 0
            while buffered < 960 {
                decisions += 1
                #expect(decisions < 50, "the receiver gets a frame in a bounded number of decisions")
                let late = run.buffer.late
                let decision = run.buffer.decide(nowMs: now, bufferedSamples: buffered)
                run.droppedWaiting += run.buffer.late - late
                switch decision {
                case .normal(let p), .merge(let p), .accelerate(let p), .decelerate(let p):
                    run.played.append((p, Double(now) + Double(buffered) / 48 - Double(p.arrivalMs)))
                    if UInt16(truncatingIfNeeded: p.sequence) == lastSequence { lastPlayed = true }
                case .expand: if !lastPlayed { run.concealedBeforeEnd += 1 }
                case .comfortNoise: if !lastPlayed { run.comfortNoiseBeforeEnd += 1 }
                case .silence: if !run.played.isEmpty { run.silenceAfterStart += 1 }
                case .fec: run.fec += 1
                }
                switch decision {
                case .silence(let n), .expand(let n), .comfortNoise(let n), .fec(_, let n): buffered += n
                case .normal(let p), .merge(let p): buffered += p.samples
                case .accelerate(let p):
                    buffered += p.samples - 240
                    run.buffer.stretched(removing: 240)
                case .decelerate(let p):
                    buffered += p.samples + 240
                    run.buffer.stretched(removing: -240)
                }
            }
            buffered -= 960
        }
        return run
    }

    static let modes: [PlayoutMode] = [.adaptive, .fixed(ms: 60), .fixed(ms: 120)]

    /// Conservation: every arrival is filed, refused as late or refused as a duplicate (exactly one), and every
    /// packet filed is played, dropped late or still waiting; duplicates and loss are counted exactly.
    @Test(arguments: modes)
    func everyPacketIsAccountedFor(mode: PlayoutMode) {
        for seed in UInt64(1)...40 {
            let arrivals = Self.trace(seed: seed, packets: 600)
            let run = Self.play(arrivals, mode: mode, ceilingMs: 500)
            let indices = Set(arrivals.map(\.index))
            let span = indices.max()! - indices.min()! + 1
            #expect(run.unaccounted == 0, "seed \(seed): arrivals neither filed, late nor duplicate")
            #expect(run.filed == run.played.count + run.droppedWaiting + run.buffer.waiting,
                    "seed \(seed): filed \(run.filed), played \(run.played.count), dropped \(run.droppedWaiting), waiting \(run.buffer.waiting)")
            #expect(run.filed + run.lateOnArrival == indices.count, "seed \(seed): each packet is filed or late once")
            #expect(run.buffer.duplicates == arrivals.count - indices.count, "seed \(seed)")
            #expect(run.buffer.lost == span - indices.count, "seed \(seed)")
        }
    }

    /// Packets play in sequence order, each once, with their own media (timestamp, length, payload), their media
    /// never overlapping, and none later than the ceiling.
    @Test(arguments: modes)
    func packetsPlayInOrderOnceWithTheirOwnMedia(mode: PlayoutMode) {
        for seed in UInt64(1)...40 {
            let arrivals = Self.trace(seed: seed, packets: 600)
            let sent = Dictionary(arrivals.map { ($0.sequence, $0) }, uniquingKeysWith: { first, _ in first })
            let run = Self.play(arrivals, mode: mode, ceilingMs: 500)
            #expect(run.played.count > 300, "seed \(seed): most packets play")
            for (previous, next) in zip(run.played, run.played.dropFirst()) {
                #expect(next.packet.sequence > previous.packet.sequence, "seed \(seed): played out of order or twice")
                #expect(next.packet.timestamp >= previous.packet.end, "seed \(seed): media played twice")
            }
            for (packet, delay) in run.played {
                let original = sent[UInt16(truncatingIfNeeded: packet.sequence)]
                #expect(original.map { UInt32(truncatingIfNeeded: packet.timestamp) == $0.timestamp
                    && packet.samples == $0.samples && packet.isDTX == $0.dtx } == true,
                        "seed \(seed): packet \(packet.sequence) played with another packet's media")
                #expect(delay >= 0 && delay <= 500, "seed \(seed): delay \(delay) outside 0...ceiling")
            }
        }
    }

    /// With a constant network delay (no loss, jitter, reordering or duplicates; DTX pauses and 40 ms packets
    /// still), every packet plays, none is late, nothing is concealed, and the delay stays near the target.
    @Test(arguments: modes)
    func aCleanPathIsPlayedWholeWithoutConcealment(mode: PlayoutMode) {
        for seed in UInt64(1)...40 {
            let arrivals = Self.trace(seed: seed, packets: 600, impaired: false)
            let run = Self.play(arrivals, mode: mode, ceilingMs: 500)
            #expect(run.played.count == arrivals.count, "seed \(seed)")
            #expect(run.buffer.late == 0 && run.buffer.lost == 0 && run.buffer.duplicates == 0, "seed \(seed)")
            #expect(run.concealedBeforeEnd == 0 && run.fec == 0 && run.silenceAfterStart == 0,
                    "seed \(seed): concealed \(run.concealedBeforeEnd), fec \(run.fec), silence \(run.silenceAfterStart)")
            // A fixed buffer holds its target (plus up to a 20 ms tick of phase); an adaptive one on a path
            // without jitter stays within its initial target and one 40 ms packet.
            let bounds: ClosedRange<Double> = switch mode {
            case .fixed(let ms): Double(ms)...Double(ms + 20)
            case .adaptive: 0...Double(MediaConfig().playoutTargetMs + 40)
            }
            let outside = run.played.map(\.delayMs).filter { !bounds.contains($0) }
            #expect(outside.isEmpty, "seed \(seed): delays \(outside.prefix(5)) outside \(bounds)")
        }
    }

    /// The receiver (decoder included) over random loss, jitter and duplicates: every frame is a full frame,
    /// nothing is refused, and loss and duplicates are counted exactly.
    @Test func receiverCountsMatchTheTrace() throws {
        var random = SplitMix64(seed: 11)
        for _ in 0..<3 {
            let arrivals: [Int64?] = (0..<300).map { k in
                Int.random(in: 0..<20, using: &random) == 0 ? nil : Int64(k * 20) + Int64.random(in: 0...150, using: &random)
            }
            let ticks = 400
            let duplicated: (Int) -> Bool = { $0 % 13 == 0 }
            let (receiver, frames, _) = Replay().run(arrivals, ticks: ticks, duplicate: duplicated)
            let received = arrivals.indices.filter { arrivals[$0] != nil }
            let stats = receiver.stats
            #expect(frames.allSatisfy { $0.count == Audio.frameSamples })
            #expect(stats.malformed == 0, "\(stats)")
            #expect(stats.packetsReceived == received.count + received.filter(duplicated).count, "\(stats)")
            #expect(stats.duplicates == received.filter(duplicated).count, "\(stats)")
            #expect(stats.packetsLost == received.last! - received.first! + 1 - received.count, "\(stats)")
        }
    }
}
