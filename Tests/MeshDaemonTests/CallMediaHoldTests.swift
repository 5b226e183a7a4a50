import Foundation
import MeshCall
@testable import MeshDaemon
import MeshMedia
import Testing

/// A held call's media (docs/calls.md, "Call control"): nothing goes out, comfort noise is played in place of the
/// peer, and after the hold (or a quelch) the peer's stream plays again at once: no pause played out, nothing stale.
@Suite struct CallMediaHoldTests {
    private static func rms(_ frame: [Int16]) -> Double {
        (frame.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(frame.count)).squareRoot()
    }

    @Test func aHeldCallSendsNothingPlaysComfortNoiseAndResumesAtOnce() throws {
        let (k1, k2) = (Array(repeating: UInt8(1), count: 30), Array(repeating: UInt8(2), count: 30))
        let a = try CallMedia(id: CallID(raw: 1), keys: SRTPKeys(send: k1, receive: k2), config: MediaConfig(), source: .client, sink: .client)
        let b = try CallMedia(id: CallID(raw: 1), keys: SRTPKeys(send: k2, receive: k1), config: MediaConfig(), source: .client, sink: .client)
        // Loud noise, new every frame (Opus's own DTX takes anything steady for silence): every frame is sent.
        var seed: UInt32 = 1
        func noise() -> [Int16] {
            (0..<Audio.frameSamples).map { _ -> Int16 in
                seed = seed &* 1_664_525 &+ 1_013_904_223
                return Int16(Int32(seed >> 16) % 12_000 - 6_000)
            }
        }
        var now: Int64 = 0
        /// One 20 ms tick: a's frame goes to b (no network delay), b plays. Returns whether a sent a packet and b's frame.
        func tick() throws -> (Bool, [Int16]) {
            a.enqueue(noise())
            let packet = try a.outbound()
            if let packet { #expect(b.inbound(packet, nowMs: now)) }
            now += 20
            return (packet != nil, b.playout(nowMs: now))
        }
        for _ in 0..<100 { _ = try tick() }
        let before = b.stats
        #expect(Self.rms(try tick().1) > 500, "the noise plays")

        // Held: a sends nothing (whatever its client feeds), b plays low-level noise, not a's, not silence.
        a.sends = false
        b.plays = false
        var levels: [Double] = []
        for _ in 0..<150 {
            let (sent, frame) = try tick()
            #expect(!sent)
            levels.append(Self.rms(frame))
        }
        #expect(levels.allSatisfy { $0 > 10 && $0 < 100 }, "comfort noise at about -60 dBFS: \(levels.min()!)–\(levels.max()!)")
        #expect(b.stats.framesConcealed == before.framesConcealed, "the hold is not counted as loss")

        // Resumed: the noise is back within a few frames, with no pause to play out and nothing counted lost.
        a.sends = true
        b.plays = true
        var loudAfter: Int?
        for i in 0..<50 {
            let (_, frame) = try tick()
            if loudAfter == nil, Self.rms(frame) > 500 { loudAfter = i }
        }
        #expect((loudAfter ?? 99) <= 5, "noise back after \(loudAfter.map(String.init) ?? "never") frames")
        #expect(b.stats.packetsLost == 0)
        #expect(b.stats.currentPlayoutDelayMs < 100)

        // Quelched at b while a goes on sending (a caller that ignores the notice): nothing of it is played, and
        // when b lets it through again what piled up meanwhile is dropped, not played late.
        b.plays = false
        for _ in 0..<150 { _ = try tick() }
        b.plays = true
        for _ in 0..<10 { _ = try tick() }
        #expect(b.stats.currentPlayoutDelayMs < 100, "playout delay \(b.stats.currentPlayoutDelayMs) ms after the quelch")
    }
}
