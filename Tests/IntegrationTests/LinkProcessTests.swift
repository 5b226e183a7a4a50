import Foundation
import MeshControl
import MeshIdentity
import MeshTestKit
import Testing

/// A real node flooded with forged handshake initiations from a raw UDP socket while it carries a call
/// (docs/links.md, "Before any signature work").
@Suite(.serialized) struct HandshakeFloodTests {
    private static func call(socket: String, callee: String, play: String, record: String) throws -> (Finished, JSONValue?) {
        let result = try runCommand(Binaries.meshNode, ["call", callee, "--control-socket", socket, "--play", play,
                                                        "--record", record, "--json"], timeout: 60)
        return (result, try? decodeJSON(result.stdout))
    }

    @Test func aFloodOfForgedInitiationsLeavesNoPeersAndTheCallsIntact() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let speech = try speechSample(in: scratch)
        let b = try NodeProcess("b", in: scratch, arguments: ["--auto-answer", "echo"])
        defer { b.stop() }
        let a = try NodeProcess("a", in: scratch, arguments: ["--peer", "\(b.address)@127.0.0.1:\(b.port)"])
        defer { a.stop() }
        try a.wait(for: "link to b") { $0["peersUp"]?.intValue == 1 }
        try b.wait(for: "link to a") { $0["peersUp"]?.intValue == 1 }

        let (socket, callee) = (a.socket, b.address)
        let during = Background { try Self.call(socket: socket, callee: callee, play: speech, record: scratch.file("during.wav")) }
        usleep(500_000)
        // 2,000 forged initiations a second for 4 s: three in four made by someone who knows B's address (valid
        // mac1, random signature), one in four without (random mac1).
        let flooder = try RogueNode()
        let target = try WalletAddress(parsing: b.address)
        var rng = SplitMix64(seed: 8)
        var sent = 0
        let end = Date().addingTimeInterval(4)
        while Date() < end {
            for _ in 0..<20 {
                flooder.sendRaw(RogueNode.forgedInitiation(to: target, knowingAddress: sent % 4 != 0, rng: &rng), to: b.port)
                sent += 1
            }
            usleep(10_000)
        }
        let (result, summary) = try during.wait()
        #expect(result.status == 0, "call during the flood failed: \(result.stderr)")
        let received = summary?["packetsReceived"]?.intValue ?? 0
        #expect(received > 150)
        #expect((summary?["packetsLost"]?.intValue ?? 99) <= received / 20)
        let duringMatch = try speechMatch(speech, scratch.file("during.wav"))["correlation"]?.doubleValue ?? 0
        #expect(duringMatch > speechMatchFloor, "audio match during the flood: \(duringMatch); \(mediaFigures(summary))")

        // B did a bounded amount of signature work, kept no peer for any forged sender, and refused the rest.
        let counters = try b.ctlJSON(["info"])["linkCounters"] ?? .null
        let recoveries = counters["signatureRecoveries"]?.intValue ?? .max
        #expect(recoveries <= sent / 10, "\(recoveries) signature recoveries for \(sent) forged initiations")
        #expect((counters["macFailed"]?.intValue ?? 0) >= sent / 4 - 50)
        #expect((counters["cookieRequired"]?.intValue ?? 0) > sent / 2)
        let peers = try b.ctlJSON(["peers"])["peers"]?.arrayValue ?? []
        #expect(peers.map { $0["address"]?.stringValue } == [a.address], "only the real neighbour is a peer")

        // A call placed right after the flood works as well as any.
        let (after, afterSummary) = try Self.call(socket: socket, callee: callee, play: speech, record: scratch.file("after.wav"))
        #expect(after.status == 0, "call after the flood failed: \(after.stderr)")
        #expect((afterSummary?["packetsLost"]?.intValue ?? 99) <= 2)
        let afterMatch = try speechMatch(speech, scratch.file("after.wav"))["correlation"]?.doubleValue ?? 0
        #expect(afterMatch > speechMatchFloor, "audio match after the flood: \(afterMatch); \(mediaFigures(afterSummary))")
    }
}

/// The node's UDP socket: the buffers it asked for and got, and the kernel's drops, in `node-ctl info`.
@Suite(.serialized) struct LinkSocketTests {
    @Test func theSocketBuffersAreSizedAndKernelDropsAreCounted() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        // Default: 4 MiB asked; as root the kernel grants it (and reports twice that, its bookkeeping).
        let big = try NodeProcess("big", in: scratch, arguments: [])
        defer { big.stop() }
        let socket = try big.ctlJSON(["info"])["socket"] ?? .null
        #expect(socket["bufferAskedBytes"]?.intValue == 4 << 20)
        #expect(socket["receiveBufferBytes"]?.intValue == 8 << 20)
        #expect(socket["sendBufferBytes"]?.intValue == 8 << 20)
        #expect(big.logText().contains("UDP socket buffers"))

        // A small buffer on a node that cannot read (stopped): the kernel drops what does not fit, and says so.
        let small = try NodeProcess("small", in: scratch, arguments: ["--socket-buffer", "65536"])
        defer { small.stop() }
        #expect(try small.ctlJSON(["info"])["socket"]?["receiveBufferBytes"]?.intValue == 128 << 10)
        let sender = try RogueNode()
        kill(small.process.processIdentifier, SIGSTOP)
        for i in 0..<2_000 { sender.sendRaw([UInt8](repeating: UInt8(i % 200), count: 200), to: small.port) }
        kill(small.process.processIdentifier, SIGCONT)
        let drops = try small.ctlJSON(["info"])["socket"]?["kernelDrops"]?.intValue ?? 0
        #expect(drops > 1_000, "kernel drops: \(drops)")
    }
}
