@testable import MeshRouting
import MeshTestKit
import Testing

/// One RTP session's packets as a sender makes them: 20 ms frames, now and then a marker, a silence (DTX) gap or a
/// long timestamp jump, payloads of any length; sequence and timestamp start near their wrap.
struct RTPStream {
    let label: UInt32
    var byte0: UInt8
    var payloadType: UInt8
    var ssrc: UInt32
    var seq: UInt16
    var ts: UInt32

    init(label: UInt32, _ rng: inout SplitMix64) {
        self.label = label
        // Version 2; now and then padding, an extension or CSRCs (the bytes after the fixed header are opaque).
        byte0 = 0x80 | (rng.next() % 4 == 0 ? UInt8.random(in: 0...0x3F, using: &rng) : 0)
        payloadType = UInt8.random(in: 0...127, using: &rng)
        ssrc = UInt32.random(in: 0...UInt32.max, using: &rng)
        seq = UInt16.max - UInt16.random(in: 0...300, using: &rng)
        ts = UInt32.max - UInt32.random(in: 0...200_000, using: &rng)
    }

    static func message(label: UInt32, byte0: UInt8, byte1: UInt8, seq: UInt16, ts: UInt32, ssrc: UInt32,
                        rest: [UInt8]) -> [UInt8] {
        var inner: [UInt8] = [0x20, byte0, byte1, UInt8(seq >> 8), UInt8(seq & 0xFF)]
        inner += [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: ts >> $0) }
        inner += [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: ssrc >> $0) }
        return ChainMessage.data(label: label, inner + rest)
    }

    mutating func next(_ rng: inout SplitMix64) -> [UInt8] {
        let roll = rng.next() % 1_000
        let marker: UInt8 = roll < 20 ? 0x80 : 0
        if roll < 5 { ssrc = UInt32.random(in: 0...UInt32.max, using: &rng) }
        if (5..<10).contains(roll) { payloadType = UInt8.random(in: 0...127, using: &rng) }
        let length = rng.next() % 50 == 0 ? Int.random(in: 900...1_400, using: &rng) : Int.random(in: 0...200, using: &rng)
        let bytes = Self.message(label: label, byte0: byte0, byte1: marker | payloadType, seq: seq, ts: ts, ssrc: ssrc,
                                 rest: rng.bytes(length))
        seq &+= 1
        let step: UInt32 = switch roll {
        case 900..<960: 960 * UInt32.random(in: 2...40, using: &rng)
        case 960..<970: UInt32.random(in: 1 << 21...1 << 23, using: &rng)
        default: 960
        }
        ts &+= step
        return bytes
    }
}

/// Losses, reordering and duplication: `dropped`, `swapped`, `duplicated` in per mille.
struct Impairment {
    var dropped = 0
    var swapped = 0
    var duplicated = 0

    static let clean = Impairment()

    func apply<T>(_ items: [T], _ rng: inout SplitMix64) -> [T] {
        var out: [T] = []
        for item in items {
            let roll = Int(rng.next() % 1_000)
            if roll < dropped { continue }
            out.append(item)
            if roll >= 1_000 - duplicated { out.append(item) }
            if Int(rng.next() % 1_000) < swapped, out.count >= 2 { out.swapAt(out.count - 1, out.count - 2) }
        }
        return out
    }
}

@Suite struct TrunkWireTests {
    /// A trunk as built: the payload and the data messages that went into it, in order.
    typealias Trunk = (payload: [UInt8], messages: [[UInt8]])

    /// Feeds messages through an encoder in rounds (a round is closed like a hold timer would), keeping track of
    /// which messages each trunk holds.
    static func trunks(_ rounds: [[[UInt8]]], encoder: inout TrunkEncoder) -> [Trunk] {
        var out: [Trunk] = []
        var open: [[UInt8]] = []
        for round in rounds {
            for message in round {
                if let finished = encoder.append(message) {
                    out.append((finished, open))
                    open = []
                }
                open.append(message)
            }
            if let finished = encoder.finish() {
                out.append((finished, open))
                open = []
            }
        }
        #expect(open.isEmpty)
        return out
    }

    /// Rounds of packets from `sessions` interleaved sessions (each sends in a round with probability 0.9), an
    /// impaired upstream, and now and then a non-media data message.
    static func rounds(_ count: Int, sessions: Int, upstream: Impairment, _ rng: inout SplitMix64) -> [[[UInt8]]] {
        var streams = (0..<sessions).map { RTPStream(label: UInt32($0 + 1) * 0x0101_0101, &rng) }
        var perSession: [[[UInt8]]] = streams.indices.map { i in (0..<count).map { _ in streams[i].next(&rng) } }
        perSession = perSession.map { upstream.apply($0, &rng) }
        var rounds: [[[UInt8]]] = []
        var cursors = Array(repeating: 0, count: sessions)
        while cursors.indices.contains(where: { cursors[$0] < perSession[$0].count }) {
            var round: [[UInt8]] = []
            for s in 0..<sessions where cursors[s] < perSession[s].count && rng.next() % 10 != 0 {
                round.append(perSession[s][cursors[s]])
                cursors[s] += 1
            }
            if rng.next() % 20 == 0 {
                round.append(ChainMessage.data(label: 77, [[0x10, 0x35, 0x36, 0x37].randomElement(using: &rng)!] + rng.bytes(40)))
            }
            rounds.append(round)
        }
        return rounds
    }

    /// Decodes what arrives and checks each trunk: its restored messages are, in order, exactly some of the
    /// messages that went in (byte for byte), and every one left out is counted as a mini without usable context.
    static func deliver(_ arriving: [Trunk], to decoder: inout TrunkDecoder) -> [[UInt8]] {
        var restored: [[UInt8]] = []
        for trunk in arriving {
            let before = decoder.counters
            let out = decoder.decode(trunk.payload)
            var originals = trunk.messages[...]
            for message in out {
                guard let at = originals.firstIndex(of: message) else {
                    let header = RTPHeader(message: message).map { "\($0)" } ?? "not media"
                    Issue.record("a restored message (\(header)) that is not one of the trunk's, in order")
                    return restored
                }
                originals = originals[(at + 1)...]
            }
            let dropped = decoder.counters.miniWithoutContext - before.miniWithoutContext
                + decoder.counters.miniMismatch - before.miniMismatch
            #expect(out.count + dropped == trunk.messages.count)
            #expect(decoder.counters.malformed == before.malformed)
            restored += out
        }
        return restored
    }

    @Test func cleanLinkRestoresEverythingInOrder() {
        var rng = SplitMix64(seed: 31)
        for (sessions, maxBytes) in [(1, TrunkWire.defaultMaxBytes), (5, TrunkWire.defaultMaxBytes), (12, 400), (3, 60)] {
            let rounds = Self.rounds(600, sessions: sessions, upstream: .clean, &rng)
            var encoder = TrunkEncoder(maxBytes: maxBytes)
            var decoder = TrunkDecoder()
            let trunks = Self.trunks(rounds, encoder: &encoder)
            let restored = Self.deliver(trunks, to: &decoder)
            #expect(restored == rounds.flatMap { $0 })
            #expect(decoder.counters.miniEntries == encoder.counters.miniEntries)
            #expect(decoder.counters.fullEntries == encoder.counters.fullEntries)
            #expect(decoder.counters.trunks == encoder.counters.trunks)
            #expect(encoder.counters.miniEntries > encoder.counters.fullEntries, "compression at work (\(sessions) sessions)")
        }
    }

    @Test func steadyStreamIsMostlyMinis() {
        var rng = SplitMix64(seed: 32)
        let ssrc = UInt32.random(in: 0...UInt32.max, using: &rng)
        var encoder = TrunkEncoder()
        var decoder = TrunkDecoder()
        var sent: [[UInt8]] = []
        var restored: [[UInt8]] = []
        for seq in 0..<1_000 {
            let message = RTPStream.message(label: 9, byte0: 0x80, byte1: 111, seq: UInt16(truncatingIfNeeded: 65_000 + seq),
                                            ts: UInt32.max - 100_000 &+ UInt32(seq * 960), ssrc: ssrc,
                                            rest: rng.bytes(Int.random(in: 40...120, using: &rng)))
            sent.append(message)
            #expect(encoder.append(message) == nil)
            restored += decoder.decode(encoder.finish()!)
        }
        #expect(restored == sent)
        // Fulls: the first and two more, a refresh every 64 packets and one at each wrap of sequence and timestamp.
        #expect(encoder.counters.miniEntries >= 900)
        #expect(encoder.counters.miniEntries == decoder.counters.miniEntries)
    }

    /// Random streams with upstream loss, reordering and duplication, over a link that drops, swaps and duplicates
    /// whole trunks: nothing wrong ever comes out, and what does not come out is counted.
    @Test func impairedStreamsNeverRestoreWrongBytes() {
        var rng = SplitMix64(seed: 33)
        var arrived = 0
        var restoredTotal = 0
        for run in 0..<12 {
            let upstream = run % 2 == 0 ? Impairment.clean : Impairment(dropped: 30, swapped: 30, duplicated: 20)
            let link = Impairment(dropped: [20, 100, 300][run % 3], swapped: 50, duplicated: 20)
            let rounds = Self.rounds(800, sessions: 1 + run % 6, upstream: upstream, &rng)
            var encoder = TrunkEncoder(maxBytes: [TrunkWire.defaultMaxBytes, 500][run % 2])
            var decoder = TrunkDecoder()
            let arriving = link.apply(Self.trunks(rounds, encoder: &encoder), &rng)
            let restored = Self.deliver(arriving, to: &decoder)
            let originals = Set(rounds.flatMap { $0 })
            #expect(restored.allSatisfy(originals.contains))
            #expect(decoder.counters.malformed == 0)
            arrived += arriving.reduce(0) { $0 + $1.messages.count }
            restoredTotal += restored.count
        }
        // Forward offsets bridge lost refreshes: few of the messages that arrive are dropped.
        #expect(Double(restoredTotal) >= 0.95 * Double(arrived), "\(restoredTotal) of \(arrived)")
    }

    /// A decoder that missed references (up to two in a row) restores minis from an older one.
    @Test func minisSurviveLostReferences() {
        var rng = SplitMix64(seed: 34)
        var encoder = TrunkEncoder()
        var decoder = TrunkDecoder()
        let ssrc = UInt32.random(in: 0...UInt32.max, using: &rng)
        var fulls = 0
        var minisArrived = 0
        for seq in 0..<2_000 {
            let message = RTPStream.message(label: 5, byte0: 0x80, byte1: 8, seq: UInt16(truncatingIfNeeded: seq),
                                            ts: UInt32(seq * 160), ssrc: ssrc, rest: rng.bytes(20))
            let before = encoder.counters.fullEntries
            _ = encoder.append(message)
            let trunk = encoder.finish()!
            let isFull = encoder.counters.fullEntries > before
            if isFull { fulls += 1 }
            // Every full after the first three is lost, but one in three.
            if isFull && fulls > 3 && fulls % 3 != 0 { continue }
            if !isFull { minisArrived += 1 }
            #expect(decoder.decode(trunk) == [message])
        }
        #expect(decoder.counters.miniWithoutContext == 0)
        #expect(decoder.counters.miniMismatch == 0)
        #expect(decoder.counters.miniEntries == minisArrived)
    }

    /// A reference too far behind (the link was down for longer than the window) is caught by the check byte.
    @Test func staleReferenceIsCaught() {
        var encoder = TrunkEncoder()
        var decoder = TrunkDecoder()
        var outputs: [[UInt8]] = []
        for seq in 0..<1_000 {
            let message = RTPStream.message(label: 5, byte0: 0x80, byte1: 8, seq: UInt16(seq), ts: UInt32(seq * 160),
                                            ssrc: 0x1234_5678, rest: [UInt8(seq & 0xFF)])
            _ = encoder.append(message)
            let trunk = encoder.finish()!
            guard seq < 10 || seq >= 600 else { continue }
            let out = decoder.decode(trunk)
            #expect(out.isEmpty || out == [message])
            outputs += out
        }
        #expect(decoder.counters.miniMismatch > 0)
        #expect(outputs.count > 350)
    }

    /// A mini from a late trunk, behind a newer reference with another payload type, chosen so that the check byte
    /// alone would not tell: dropped by its sequence offset.
    @Test func lateMiniIsDropped() throws {
        let ssrc: UInt32 = 0x8000_0000
        func packet(_ seq: Int, payloadType: UInt8) -> [UInt8] {
            RTPStream.message(label: 6, byte0: 0x80, byte1: payloadType, seq: UInt16(seq), ts: UInt32(seq * 960), ssrc: ssrc,
                              rest: [UInt8(seq)])
        }
        // What a decoder holding packet 12 as its reference would restore packet 9 as: 256 packets and 2^24 units on.
        let late = try #require(RTPHeader(message: packet(9, payloadType: 0)))
        let newType = try #require((1...127).first { (type: UInt8) in
            var wrong = late
            wrong.byte1 = type
            wrong.seq &+= 256
            wrong.ts &+= 1 << 24
            return TrunkWire.check(wrong) == TrunkWire.check(late)
        })
        // Packets 0–9 with payload type 0 (3–9 minis), 10–12 with the new one (a new context: fulls); 9 arrives last.
        let packets = (0..<13).map { packet($0, payloadType: $0 < 10 ? 0 : newType) }
        var encoder = TrunkEncoder()
        var decoder = TrunkDecoder()
        let trunks = packets.map { _ = encoder.append($0); return encoder.finish()! }
        #expect(encoder.counters.miniEntries == 7)
        for seq in packets.indices where seq != 9 { #expect(decoder.decode(trunks[seq]) == [packets[seq]]) }
        #expect(decoder.decode(trunks[9]).isEmpty)
        #expect(decoder.counters.miniMismatch == 1)
    }

    @Test func exactLayoutOfFullAndMiniEntries() {
        let first: [UInt8] = [0x34, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x80, 0x6F, 0x12, 0x34, 0x00, 0xAB, 0xCD, 0xEF,
                              0xDE, 0xAD, 0xBE, 0xEF, 0xAA, 0xBB, 0xCC]
        let messages = (0..<4).map {
            RTPStream.message(label: 0x0A0B_0C0D, byte0: 0x80, byte1: 0x6F, seq: 0x1234 + UInt16($0),
                              ts: 0x00AB_CDEF + 960 * UInt32($0), ssrc: 0xDEAD_BEEF, rest: [0xAA, 0xBB, 0xCC])
        }
        #expect(messages[0] == first)
        var encoder = TrunkEncoder()
        for message in messages { #expect(encoder.append(message) == nil) }
        #expect(encoder.pending == 4)
        let trunk = encoder.finish()!
        #expect(encoder.pending == 0)
        #expect(encoder.finish() == nil)
        // The first packet and the two a new context owes go full: a u16 header (kind 0b00, length 21), the message.
        let fulls = messages[0..<3].flatMap { [0x00, 0x15] as [UInt8] + $0 }
        // Then a mini: header (kind 0b01, length 12), label, check, sequence low byte, timestamp low 24 bits, the rest.
        // Check: (0x80 ^ 0x6F ^ (0xDE ^ 0xAD ^ 0xBE ^ 0xEF)) * 0x9D + 0x12 + 3 * 0x00 = 0xCD * 0x9D + 0x12 = 0xCB (mod 256).
        let mini: [UInt8] = [0x40, 0x0C, 0x0A, 0x0B, 0x0C, 0x0D, 0xCB, 0x37, 0xAB, 0xD9, 0x2F, 0xAA, 0xBB, 0xCC]
        #expect(trunk == [0x39] as [UInt8] + fulls + mini)
        #expect(TrunkWire.isTrunk(trunk))
        #expect(encoder.counters == { var c = TrunkCounters(); c.trunks = 1; c.fullEntries = 3; c.miniEntries = 1; return c }())
        var decoder = TrunkDecoder()
        #expect(decoder.decode(trunk) == messages)
    }

    /// Which packets go full: "F" full, "m" mini, for runs of (sequence, timestamp, marker) of one label each.
    @Test func fullOrMiniRules() {
        func kinds(_ packets: [(seq: UInt16, ts: UInt32, marker: Bool)]) -> String {
            var encoder = TrunkEncoder()
            var decoder = TrunkDecoder()
            var out = ""
            for p in packets {
                let message = RTPStream.message(label: 8, byte0: 0x80, byte1: p.marker ? 0x80 | 96 : 96, seq: p.seq, ts: p.ts,
                                                ssrc: 0xCAFE, rest: [1, 2, 3])
                let minis = encoder.counters.miniEntries
                _ = encoder.append(message)
                out += encoder.counters.miniEntries > minis ? "m" : "F"
                #expect(decoder.decode(encoder.finish()!) == [message])
            }
            return out
        }
        func run(_ seqs: some Sequence<Int>, ts: (Int) -> UInt32 = { UInt32($0 * 960) }, marker: Set<Int> = [])
            -> [(seq: UInt16, ts: UInt32, marker: Bool)] {
            seqs.map { (UInt16(truncatingIfNeeded: $0), ts($0), marker.contains($0)) }
        }
        let m = { (count: Int) in String(repeating: "m", count: count) }
        #expect(kinds(run(100...103)) == "FFFm", "a new context owes two more fulls")
        #expect(kinds(run(100...168)) == "FFF" + m(63) + "Fmm", "a refresh 64 packets after the reference, no more owed")
        #expect(kinds(run(Array(100...110) + [115, 116])) == "FFF" + m(8) + "Fm", "a small gap: one full")
        #expect(kinds(run(Array(100...110) + [1_000, 1_001, 1_002, 1_003])) == "FFF" + m(8) + "FFFm",
                "a gap past the reference step: a new context")
        #expect(kinds(run(Array(100...110) + [110, 111, 112])) == "FFF" + m(8) + "Fmm", "a duplicate: one full")
        #expect(kinds(run(Array(100...103) + [102, 103, 104, 105])) == "FFFm" + "FFFm",
                "a duplicate of the reference is not ahead of it: a new context")
        #expect(kinds(run(Array(100...110) + [109, 111, 112])) == "FFF" + m(8) + "FFm", "reordered: a full each")
        #expect(kinds(run(100...112, marker: [106])) == "FFFmmm" + "FFFFm" + "mm", "a marker changes byte1 twice")
        #expect(kinds(run(65_533...65_540)) == "FFF" + "Fmmmm", "the sequence wraps")
        let nearWrap = { (i: Int) in UInt32.max - 2_000 &+ UInt32(i * 960) }
        #expect(kinds(run(0...5, ts: nearWrap)) == "FFF" + "Fmm", "the timestamp wraps")
        #expect(kinds(run(0...5, ts: { UInt32($0 * 960 + ($0 >= 4 ? 960 * 40 : 0)) })) == "FFFm" + "mm", "a DTX gap")
        #expect(kinds(run(0...5, ts: { UInt32($0 * 960 + ($0 >= 4 ? 1 << 21 : 0)) })) == "FFFm" + "mm",
                "a timestamp jump within a mini's span")
        #expect(kinds(run(0...7, ts: { UInt32($0 * 960 + ($0 >= 4 ? 1 << 22 : 0)) })) == "FFFm" + "FFFm",
                "a timestamp jump past the reference step: a new context")
    }

    @Test func nonMediaMessagesPassUnchanged() {
        var rng = SplitMix64(seed: 35)
        let messages: [[UInt8]] = [
            ChainMessage.data(label: 1, []),
            ChainMessage.data(label: 1, [0x10] + rng.bytes(300)),
            ChainMessage.data(label: 1, ChainInner.probe(sequence: 3, sentAtMs: 4).serialize()),
            ChainMessage.data(label: 1, ChainInner.pong(sequence: 3, sentAtMs: 4, mac: rng.bytes(8)).serialize()),
            ChainMessage.data(label: 1, [0x20] + rng.bytes(11)),
            ChainMessage.data(label: 1, [0x20, 0x40] + rng.bytes(30)),
        ]
        var encoder = TrunkEncoder()
        var decoder = TrunkDecoder()
        for _ in 0..<3 {
            for message in messages { #expect(encoder.append(message) == nil) }
            #expect(decoder.decode(encoder.finish()!) == messages)
        }
        #expect(encoder.counters.miniEntries == 0)
        #expect(encoder.contexts.count == 0)
        #expect(decoder.references.count == 0)
    }

    @Test func malformedTrunksAreDroppedAndCounted() {
        let good = RTPStream.message(label: 3, byte0: 0x80, byte1: 0, seq: 1, ts: 1, ssrc: 1, rest: [1, 2])
        let goodEntry: [UInt8] = [0x00, UInt8(good.count)] + good
        let cases: [(name: String, payload: [UInt8], restored: [[UInt8]], malformed: Int)] = [
            ("not a trunk", [0x34, 0, 0, 0, 1], [], 1),
            ("nothing", [], [], 1),
            ("an empty trunk", [0x39], [], 1),
            ("kind 0b10", [0x39, 0x80, 0x01, 0x00] + goodEntry, [good], 1),
            ("kind 0b11", [0x39, 0xC0, 0x00] + goodEntry, [good], 1),
            ("a length past the end", [0x39] + goodEntry + [0x00, 0x10, 0x34, 0, 0, 0, 1], [good], 1),
            ("half an entry header", [0x39] + goodEntry + [0x00], [good], 1),
            ("a mini body of 8 bytes", [0x39, 0x40, 0x08, 0, 0, 0, 3, 0, 0, 0, 0] + goodEntry, [good], 1),
            ("a full body that is not a data message", [0x39, 0x00, 0x02, 0x10, 0x00] + goodEntry, [good], 1),
            ("a full body of 4 bytes", [0x39, 0x00, 0x04, 0x34, 0, 0, 0] + goodEntry, [good], 1),
            ("an empty full body", [0x39, 0x00, 0x00] + goodEntry, [good], 1),
        ]
        for c in cases {
            var decoder = TrunkDecoder()
            #expect(decoder.decode(c.payload) == c.restored, "\(c.name)")
            #expect(decoder.counters.malformed == c.malformed, "\(c.name)")
        }

        var decoder = TrunkDecoder()
        let mini: [UInt8] = [0x39, 0x40, 0x0A, 0, 0, 0, 3, 0x00, 2, 0, 0, 2, 9]
        #expect(decoder.decode(mini).isEmpty)
        #expect(decoder.counters.miniWithoutContext == 1)
        #expect(decoder.decode([0x39] + goodEntry) == [good])
        #expect(decoder.decode(mini).isEmpty, "a wrong check byte")
        #expect(decoder.counters.miniMismatch == 1)
        var fixed = mini
        let second = RTPStream.message(label: 3, byte0: 0x80, byte1: 0, seq: 2, ts: 2, ssrc: 1, rest: [9])
        fixed[7] = TrunkWire.check(RTPHeader(message: second)!)
        #expect(decoder.decode(fixed) == [second])

        var encoder = TrunkEncoder()
        let refusals: [[UInt8]] = [[0x10, 1, 2], [0x34, 0, 0, 1], [], [0x34] + Array(repeating: 0, count: TrunkWire.maxEntryBytes)]
        for refused in refusals {
            #expect(encoder.append(refused) == nil)
        }
        #expect(encoder.counters.malformed == 4)
        #expect(encoder.pending == 0)
        #expect(encoder.append([0x34] + Array(repeating: 0, count: TrunkWire.maxEntryBytes - 1)) == nil)
        #expect(decoder.decode(encoder.finish()!).count == 1, "the longest message an entry carries")
    }

    @Test func randomBytesNeverCrash() {
        var rng = SplitMix64(seed: 36)
        var decoder = TrunkDecoder()
        var encoder = TrunkEncoder()
        var stream = RTPStream(label: 4, &rng)
        var valid: [UInt8] = []
        // 10,000 payloads of random bytes after the tag, and 10,000 real trunks with a few bytes changed.
        for i in 0..<20_000 {
            var payload: [UInt8]
            if i % 2 == 0 {
                payload = [TrunkWire.tag] + rng.bytes(Int.random(in: 0...300, using: &rng))
            } else {
                if valid.isEmpty || i % 7 == 1 {
                    for _ in 0..<Int.random(in: 1...6, using: &rng) { _ = encoder.append(stream.next(&rng)) }
                    valid = encoder.finish()!
                }
                payload = valid
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    payload[Int.random(in: 1..<payload.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                }
            }
            #expect(decoder.decode(payload).allSatisfy { $0.first == 0x34 && $0.count >= 5 })
        }
    }

    @Test func trunksStayWithinMaxBytes() {
        var rng = SplitMix64(seed: 37)
        for maxBytes in [1, 60, 300, TrunkWire.defaultMaxBytes] {
            var encoder = TrunkEncoder(maxBytes: maxBytes)
            var decoder = TrunkDecoder()
            // One long round: every trunk but the last is closed by a message that did not fit.
            let messages = Self.rounds(300, sessions: 8, upstream: .clean, &rng).flatMap { $0 }
            let trunks = Self.trunks([messages], encoder: &encoder)
            for trunk in trunks {
                #expect(trunk.payload.count <= maxBytes || trunk.messages.count == 1)
                #expect(decoder.decode(trunk.payload) == trunk.messages)
            }
            for (trunk, next) in zip(trunks, trunks.dropFirst()) {
                let nextEntry = 2 + Int(UInt16(next.payload[1]) << 8 | UInt16(next.payload[2])) & 0x3FFF
                #expect(trunk.payload.count + nextEntry > maxBytes, "closed only when the next entry did not fit")
            }
        }
    }

    @Test func contextTablesAreBounded() {
        var rng = SplitMix64(seed: 38)
        var encoder = TrunkEncoder(maxContexts: 4)
        var decoder = TrunkDecoder(maxContexts: 4)
        var streams = (1...10).map { RTPStream(label: UInt32($0), &rng) }
        for round in 0..<200 {
            for i in streams.indices where round % 50 < 25 || i < 3 {
                let message = streams[i].next(&rng)
                _ = encoder.append(message)
                let out = decoder.decode(encoder.finish()!)
                #expect(out.isEmpty || out == [message])
                #expect(encoder.contexts.count <= 4)
                #expect(decoder.references.count <= 4)
            }
        }
        #expect(encoder.counters.miniEntries > 0, "three labels alone fit the table")

        var forgetting = TrunkEncoder()
        let ssrc: UInt32 = 99
        for seq in 0..<4 {
            _ = forgetting.append(RTPStream.message(label: 1, byte0: 0x80, byte1: 0, seq: UInt16(seq), ts: 0, ssrc: ssrc, rest: []))
        }
        #expect(forgetting.counters.miniEntries == 1)
        forgetting.forget(label: 1)
        #expect(forgetting.contexts.count == 0)
        _ = forgetting.append(RTPStream.message(label: 1, byte0: 0x80, byte1: 0, seq: 4, ts: 0, ssrc: ssrc, rest: []))
        #expect(forgetting.counters.fullEntries == 4, "a forgotten label starts over with a full")
    }
}
