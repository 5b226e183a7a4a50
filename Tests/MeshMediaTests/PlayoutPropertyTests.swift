@testable import MeshMedia
import MeshTestKit
import Testing

/// Properties of the playout buffer over random traces (seeded, so every run repeats): delays, loss,
/// reordering, duplicates, spikes, DTX pauses and 40 ms packets. The buffer is driven without a decoder: a
/// decision's samples are counted as the receiver would produce them.
@Suite struct PlayoutPropertyTests {
    struct Arrival {
        let sequence: UInt16
        let timestamp: UInt32
        let samples: Int
        let dtx: Bool
        let atMs: Int64
    }

    /// A random trace: packets of 20 or 40 ms, DTX pauses (one DTX packet, then a timestamp jump with no
    /// sequence gap), network delay with jitter, bursts of loss, reordering, duplicates and spikes.
    static func trace(seed: UInt64, packets: Int) -> [Arrival] {
        var random = SplitMix64(seed: seed)
        var arrivals: [Arrival] = []
        var timestamp = UInt32.random(in: 0...UInt32.max, using: &random)
        let firstSequence = UInt16.random(in: 0...UInt16.max, using: &random)
        var mediaMs: Int64 = 0
        let jitter = Int64.random(in: 0...80, using: &random)
        var spikeUntil: Int64 = -1
        var burst = 0
        for index in 0..<packets {
            let samples = Bool.random(using: &random) && index % 7 < 2 ? 1920 : 960
            let dtx = Int.random(in: 0..<60, using: &random) == 0
            if Int.random(in: 0..<400, using: &random) == 0 { spikeUntil = mediaMs + Int64.random(in: 200...1500, using: &random) }
            if burst == 0, Int.random(in: 0..<40, using: &random) == 0 { burst = Int.random(in: 1...6, using: &random) }
            let delay = 10 + Int64.random(in: 0...jitter, using: &random) + (mediaMs < spikeUntil ? 400 : 0)
            if burst > 0 {
                burst -= 1
            } else {
                let arrival = Arrival(sequence: firstSequence &+ UInt16(truncatingIfNeeded: index), timestamp: timestamp,
                                      samples: samples, dtx: dtx, atMs: mediaMs + delay)
                arrivals.append(arrival)
                if Int.random(in: 0..<30, using: &random) == 0 {
                    arrivals.append(Arrival(sequence: arrival.sequence, timestamp: timestamp, samples: samples, dtx: dtx,
                                            atMs: arrival.atMs + Int64.random(in: 0...100, using: &random)))
                }
            }
            let pauseMs: Int64 = dtx ? Int64.random(in: 1...50, using: &random) * 20 : 0
            timestamp &+= UInt32(samples) + UInt32(pauseMs) * 48
            mediaMs += Int64(samples / 48) + pauseMs
        }
        return arrivals.sorted { $0.atMs < $1.atMs }
    }

    /// Plays `arrivals` through a buffer; checks every decision as it goes. Returns the samples played and the ticks.
    static func play(_ arrivals: [Arrival], mode: PlayoutMode, ceilingMs: Int) -> (played: Int, ticks: Int) {
        var config = MediaConfig()
        config.playout = mode
        config.playoutCeilingMs = ceilingMs
        var buffer = PlayoutBuffer(config: config)
        var buffered = 0
        var playedSequences = Set<Int64>()
        var played = 0
        var next = 0
        let ticks = Int((arrivals.last?.atMs ?? 0) / 20) + 60
        for tick in 0..<ticks {
            let now = Int64(tick * 20)
            while next < arrivals.count, arrivals[next].atMs <= now {
                let a = arrivals[next]
                buffer.insert(sequence: a.sequence, timestamp: a.timestamp, ssrc: 1,
                              payload: a.dtx ? [0x08] : [0x08, 1, 2, 3], samples: a.samples, arrivalMs: a.atMs)
                next += 1
            }
            buffer.tick(nowMs: now, bufferedSamples: buffered)
            var decisions = 0
            while buffered < 960 {
                decisions += 1
                #expect(decisions < 50, "the receiver gets a frame in a bounded number of decisions")
                let decision = buffer.decide(nowMs: now, bufferedSamples: buffered)
                let packet: PlayoutBuffer.Packet?
                switch decision {
                case .normal(let p), .merge(let p), .accelerate(let p), .decelerate(let p): packet = p
                default: packet = nil
                }
                if let packet {
                    #expect(playedSequences.insert(packet.sequence).inserted, "no packet is played twice")
                    let delay = Double(now) + Double(buffered) / 48 - Double(packet.arrivalMs)
                    #expect(delay <= Double(ceilingMs), "delay \(delay) above the ceiling")
                }
                switch decision {
                case .silence(let n), .expand(let n), .comfortNoise(let n), .fec(_, let n): buffered += n
                case .normal(let p), .merge(let p): buffered += p.samples
                case .accelerate(let p):
                    buffered += p.samples - 240
                    buffer.stretched(removing: 240)
                case .decelerate(let p):
                    buffered += p.samples + 240
                    buffer.stretched(removing: -240)
                }
            }
            buffered -= 960
            played += 960
        }
        return (played, ticks)
    }

    @Test(arguments: [PlayoutMode.adaptive, .fixed(ms: 60), .fixed(ms: 120)])
    func randomTracesKeepTheInvariants(mode: PlayoutMode) {
        for seed in UInt64(1)...40 {
            let (played, ticks) = Self.play(Self.trace(seed: seed, packets: 600), mode: mode, ceilingMs: 500)
            #expect(played == ticks * 960, "output length equals elapsed time")
        }
    }

    @Test func receiverOutputLengthEqualsElapsedTime() throws {
        var random = SplitMix64(seed: 11)
        for _ in 0..<3 {
            let arrivals: [Int64?] = (0..<300).map { k in
                Int.random(in: 0..<20, using: &random) == 0 ? nil : Int64(k * 20) + Int64.random(in: 0...150, using: &random)
            }
            let ticks = Int.random(in: 200...400, using: &random)
            let frames = Replay().run(arrivals, ticks: ticks, duplicate: { $0 % 13 == 0 }).frames
            #expect(frames.count == ticks && frames.allSatisfy { $0.count == Audio.frameSamples })
        }
    }
}
