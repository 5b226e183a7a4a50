import Foundation
import MeshCall
@testable import MeshDaemon
import MeshControl
import MeshIdentity
import MeshMedia
import MeshRouting
import MeshTestKit
import Testing

/// Real `mesh-node run` processes on loopback, real calls through the `mesh-node call` command.
@Suite(.serialized) struct CallTests {
    /// Starts an echo node B and a node A linked to it (A dials B, pinned to B's node key).
    /// `extra`: more `mesh-node run` arguments, for both nodes.
    private func echoPair(_ scratch: Scratch, calleeMode: String = "echo", extra: [String] = [],
                          namespace: NetworkNamespace? = nil) throws -> (NodeProcess, NodeProcess) {
        let b = try NodeProcess("b", in: scratch, arguments: ["--auto-answer", calleeMode, "--record-dir", scratch.file("rec")] + extra,
                                namespace: namespace)
        let a = try NodeProcess("a", in: scratch, arguments: ["--peer", "\(b.address)@127.0.0.1:\(b.port)"] + extra,
                                namespace: namespace)
        try a.wait(for: "link to b") { $0["peersUp"]?.intValue == 1 }
        try b.wait(for: "link to a") { $0["peersUp"]?.intValue == 1 }
        return (a, b)
    }

    private func placeCall(from a: NodeProcess, to b: NodeProcess, play: String, record: String) throws -> (Finished, JSONValue?) {
        try Self.placeCall(socket: a.socket, callee: b.address, play: play, record: record)
    }

    /// Starts `mesh-node call` on a background thread; `wait()` gives its result.
    private func placeCallInBackground(from a: NodeProcess, to b: NodeProcess, play: String, record: String) -> Background<(Finished, JSONValue?)> {
        let (socket, callee) = (a.socket, b.address)
        return Background { try Self.placeCall(socket: socket, callee: callee, play: play, record: record) }
    }

    private static func placeCall(socket: String, callee: String, play: String, record: String) throws -> (Finished, JSONValue?) {
        let result = try runCommand(Binaries.meshNode, ["call", callee, "--control-socket", socket, "--play", play,
                                                        "--record", record, "--json"], timeout: 60)
        return (result, try? decodeJSON(result.stdout))
    }

    private func match(_ reference: String, _ recorded: String) throws -> JSONValue {
        try speechMatch(reference, recorded)
    }

    /// Both ends' media figures of the (latest) call, for a failure message or the log.
    private func figures(_ a: NodeProcess, _ b: NodeProcess) -> String {
        let media = { (node: NodeProcess) in (try? node.ctlJSON(["calls"]))?["calls"]?.arrayValue?.last?["media"] }
        return "caller: \(mediaFigures(media(a))); callee: \(mediaFigures(media(b)))"
    }

    @Test func burstLossOnThePathSwitchesRedundancyOn() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let namespace = try NetworkNamespace()
        defer { namespace.remove() }
        // About 18 s of speech: the playout waits for copies once it has seen enough losses with a successor lost
        // too (docs/media.md), so the copies played build up over the call.
        let speech = try speechSample(in: scratch, text: """
            The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. \
            It is easy to tell the depth of a well. These days a chicken leg is a rare dish. \
            Rice is often served in round bowls. The juice of lemons makes fine punch. \
            The box was thrown beside the parked truck. The hogs were fed chopped corn and garbage.
            """)
        // The media path's own answer to loss (redundant copies) is what is measured: with coordinated quality
        // switching on, 10 % loss would also step the call down to the degraded profile (QualityLabTests).
        let (a, b) = try echoPair(scratch, extra: ["--quality-switching", "off"], namespace: namespace)
        defer {
            a.stop()
            b.stop()
        }
        // Two of every twenty media datagrams to B are dropped: 10 % loss, all of it in bursts of two, which Opus FEC
        // alone cannot rebuild. Only datagrams over 90 bytes count (speech packets): the chain's 10 probes a second
        // and the link's pings (about 55 bytes) pass, so they neither take the drops nor split the bursts.
        try namespace.nft(["add", "table", "inet", "loss"])
        try namespace.nft(["add", "chain", "inet", "loss", "out", "{ type filter hook output priority 0; }"])
        try namespace.nft(["add", "rule", "inet", "loss", "out", "udp", "dport", "\(b.port)", "udp", "length", "gt", "90",
                           "numgen", "inc", "mod", "20", "<", "2", "drop"])
        let placing = placeCallInBackground(from: a, to: b, play: speech, record: scratch.file("reply.wav"))
        var caller: JSONValue?
        var callee: JSONValue?
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            caller = (try? a.ctlJSON(["calls"]))?["calls"]?.arrayValue?.first?["media"]
            callee = (try? b.ctlJSON(["calls"]))?["calls"]?.arrayValue?.first?["media"]
            if caller?["redundancy"]?.boolValue == true, (callee?["redundancyRecovered"]?.intValue ?? 0) >= 5 { break }
            usleep(200_000)
        }
        // B's loss reports reached A inside A's own media stream, and A's copies rebuilt what was lost.
        #expect(caller?["redundancy"]?.boolValue == true, "\(String(describing: caller))")
        #expect((caller?["peerBurstLossPercent"]?.doubleValue ?? 0) >= 1, "\(String(describing: caller))")
        #expect((caller?["packetsWithRedundancy"]?.intValue ?? 0) > 0)
        #expect((callee?["packetsLost"]?.intValue ?? 0) > 0, "\(String(describing: callee))")
        #expect((callee?["redundancyRecovered"]?.intValue ?? 0) >= 5, "\(String(describing: callee))")
        // Nothing is lost towards A, so B sends no copies.
        #expect(callee?["redundancy"]?.boolValue == false)
        let (result, _) = try placing.wait()
        #expect(result.status == 0, "call failed: \(result.stderr)")
        let correlation = try match(speech, scratch.file("reply.wav"))["correlation"]?.doubleValue ?? 0
        #expect(correlation > speechMatchFloor, "round-trip audio over the lossy leg should still match, got \(correlation); \(figures(a, b))")
        print("lossy leg: B lost \(callee?["packetsLost"]?.intValue ?? 0) packets, played \(callee?["redundancyRecovered"]?.intValue ?? 0) copies, "
              + "FEC \(callee?["fecRecovered"]?.intValue ?? 0), concealment \(callee?["concealmentPercent"]?.doubleValue ?? 0) %; "
              + "A saw burst loss \(caller?["peerBurstLossPercent"]?.doubleValue ?? 0) %; round-trip match \(correlation)")
    }

    @Test func aRefusedSendCostsOneDatagramNotTheSocket() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let namespace = try NetworkNamespace()
        defer { namespace.remove() }
        let (a, b) = try echoPair(scratch, namespace: namespace)
        defer {
            a.stop()
            b.stop()
        }
        // A local firewall refuses everything to B for a while: sendto fails with EPERM.
        try namespace.nft(["add", "table", "inet", "wall"])
        try namespace.nft(["add", "chain", "inet", "wall", "out", "{ type filter hook output priority 0; }"])
        try namespace.nft(["add", "rule", "inet", "wall", "out", "udp", "dport", "\(b.port)", "drop"])
        try a.wait(for: "a refused send", timeout: 10) { ($0["nodeCounters"]?["sendFailed"]?.intValue ?? 0) > 0 }
        try namespace.nft(["delete", "table", "inet", "wall"])
        // Once the firewall lets it through, B hears from A again: A still sends on the same socket.
        let heard = { ((try? b.ctlJSON(["peers"]))?["peers"]?.arrayValue?.first?["packetsIn"]?.intValue ?? 0) }
        let before = heard()
        try b.wait(for: "traffic from a again", timeout: 10) { _ in heard() > before + 1 }
        try a.wait(for: "link up") { $0["peersUp"]?.intValue == 1 }
    }

    @Test func echoCallReturnsTheSentSpeech() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let speech = try speechSample(in: scratch)
        let (a, b) = try echoPair(scratch)
        let (result, summary) = try placeCall(from: a, to: b, play: speech, record: scratch.file("reply.wav"))
        #expect(result.status == 0, "call failed: \(result.stderr)")
        #expect(summary?["reason"]?.stringValue == "hangup")
        #expect(summary?["codec"]?.stringValue == "opus/48000/1")
        #expect((summary?["packetsSent"]?.intValue ?? 0) > 150)
        #expect((summary?["packetsReceived"]?.intValue ?? 0) > 150)
        #expect((summary?["packetsLost"]?.intValue ?? 99) <= 2)
        #expect((summary?["meanPlayoutDelayMs"]?.doubleValue ?? 0) > 0)
        let m = try match(speech, scratch.file("reply.wav"))
        let correlation = m["correlation"]?.doubleValue ?? 0
        let lag = m["lagMs"]?.doubleValue ?? 0
        #expect(correlation > speechMatchFloor, "round-trip audio should match the sent speech, got \(correlation); \(figures(a, b))")
        print("echo call: match \(correlation) at \(lag) ms; \(figures(a, b))")
        #expect(lag > 40 && lag < 800, "echo delay \(lag) ms")

        let calls = try b.ctlJSON(["calls"])["calls"]?.arrayValue ?? []
        #expect(calls.count == 1)
        #expect(calls.first?["role"]?.stringValue == "callee")
        #expect((calls.first?["media"]?["packetsReceived"]?.intValue ?? 0) > 150)
        // The caller's packets carried its loss reports through SRTP; on loopback nothing is lost, so the callee
        // sends no redundant copies.
        #expect(calls.first?["media"]?["peerLossPercent"]?.doubleValue == 0)
        #expect(calls.first?["media"]?["redundancy"]?.boolValue == false)
        #expect(calls.first?["media"]?["packetsWithRedundancy"]?.intValue == 0)
        let tableText = try b.ctl(["calls"]).stdout
        #expect(tableText.contains("callee") && tableText.contains("opus 24k"))
        #expect(a.stop() == 0)
        #expect(b.stop() == 0)
        #expect(!FileManager.default.fileExists(atPath: a.socket), "control socket should be removed on SIGTERM")
    }

    @Test func thirdPartyCannotInjectOrReadTheCallsMedia() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let speech = try speechSample(in: scratch)
        let (a, b) = try echoPair(scratch)
        let rogue = try RogueNode()
        try rogue.link(to: b.port, node: try WalletAddress(parsing: b.address))

        let placing = placeCallInBackground(from: a, to: b, play: speech, record: scratch.file("reply.wav"))

        // B's label for the call's packets from A (the chain's upstream), once the call is up.
        var label: UInt32?
        let deadline = Date().addingTimeInterval(10)
        while label == nil && Date() < deadline {
            let sessions = try b.ctlJSON(["sessions"])["sessions"]?.arrayValue ?? []
            label = sessions.first { $0["role"]?.stringValue == "callee" }?["upstreamLabel"]?.intValue.map(UInt32.init)
            let active = try b.ctlJSON(["calls"])["calls"]?.arrayValue?.contains { $0["state"]?.stringValue == "active" } ?? false
            if !active { label = nil }
            if label == nil { usleep(50_000) }
        }
        guard let label else {
            Issue.record("the call did not become active")
            return
        }
        let bAddress = try WalletAddress(parsing: b.address)
        for i in 0..<200 {
            // Media on the call's real label (but from the wrong neighbour, with the wrong keys), media on labels never
            // given out, and a hangup of the call on its label.
            let fake = (0..<120).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i) }
            rogue.run(rogue.links.send(ChainMessage.data(label: label, CallInner.media(fake).serialize()), to: bAddress, now: RogueNode.now))
            rogue.run(rogue.links.send(ChainMessage.data(label: label &+ 1 &+ UInt32(i), CallInner.media(fake).serialize()), to: bAddress,
                                       now: RogueNode.now))
            if i % 50 == 0 {
                let hangup = CallInner.signal(CallMessage.hangup(CallID(raw: 0), .normal).serialize()).serialize()
                rogue.run(rogue.links.send(ChainMessage.data(label: label, hangup), to: bAddress, now: RogueNode.now))
            }
            rogue.pump(seconds: 0.01)
        }
        rogue.pump(seconds: 1)
        let (result, summary) = try placing.wait()
        #expect(result.status == 0, "call failed: \(result.stderr)")
        #expect(summary?["reason"]?.stringValue == "hangup")
        let m = try match(speech, scratch.file("reply.wav"))
        #expect((m["correlation"]?.doubleValue ?? 0) > speechMatchFloor, "\(m); \(figures(a, b))")
        // B refused every injected packet (counted by the forwarding layer), and sent the rogue nothing of the call.
        let counters = try b.ctlJSON(["sessions"])["counters"]
        #expect(counters?["wrongNeighbour"]?.intValue == 204)
        #expect((counters?["unknownLabel"]?.intValue ?? 0) >= 200)
        #expect(!rogue.received.contains { ChainMessage.claims($0) })
        a.stop()
        b.stop()
    }

    @Test func malformedDatagramsLeaveTheCallIntact() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let speech = try speechSample(in: scratch)
        let (a, b) = try echoPair(scratch)
        let rogue = try RogueNode()
        let placing = placeCallInBackground(from: a, to: b, play: speech, record: scratch.file("reply.wav"))
        usleep(800_000)
        var rng = SplitMix64(seed: 12345)
        let sent = 3_000
        for i in 0..<sent {
            var bytes = rng.bytes(Int(rng.next() % 300))
            // Some look like link messages: handshake sizes and transport headers with random indexes.
            if !bytes.isEmpty, i % 3 == 0 { bytes[0] = [0xE1, 0xE2, 0xE3][Int(rng.next() % 3)] }
            rogue.sendRaw(bytes, to: i % 2 == 0 ? a.port : b.port)
            if i % 100 == 0 { usleep(20_000) }
        }
        let (result, summary) = try placing.wait()
        #expect(result.status == 0, "call failed: \(result.stderr)")
        #expect((summary?["packetsLost"]?.intValue ?? 99) <= 2)
        let m = try match(speech, scratch.file("reply.wav"))
        #expect((m["correlation"]?.doubleValue ?? 0) > speechMatchFloor, "\(m); \(figures(a, b))")
        var dropped = 0
        for node in [a, b] {
            let counters = try node.ctlJSON(["info"])["linkCounters"] ?? .null
            dropped += ["malformed", "unknownSession", "authFailed", "replayed", "handshakeRefused", "pinMismatch", "macFailed",
                        "wrongResponder", "cookieRequired", "rateLimited", "clockSkew"]
                .map { counters[$0]?.intValue ?? 0 }.reduce(0, +)
            // Garbage whose first byte is 0–3 goes to the STUN responder (docs/stun.md) and is counted there.
            let families = try node.ctlJSON(["metrics"])["families"]?.arrayValue ?? []
            let stun = families.first { $0["name"]?.stringValue == "meshnode_stun_dropped_total" }?["samples"]?.arrayValue ?? []
            dropped += stun.compactMap { $0["value"]?.doubleValue }.map { Int($0) }.reduce(0, +)
        }
        #expect(dropped >= sent - 10, "every garbage datagram is counted (\(dropped) of \(sent))")
        #expect(a.stop() == 0)
        #expect(b.stop() == 0)
    }

    @Test func profileSwitchesMidCallAndThePeerFollows() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let speech = try speechSample(in: scratch)
        let (a, b) = try echoPair(scratch, calleeMode: "record")
        let placing = placeCallInBackground(from: a, to: b, play: speech, record: scratch.file("reply.wav"))
        var callID: String?
        let deadline = Date().addingTimeInterval(10)
        while callID == nil && Date() < deadline {
            callID = (try a.ctlJSON(["calls"])["calls"]?.arrayValue ?? []).first { $0["state"]?.stringValue == "active" }?["id"]?.stringValue
            if callID == nil { usleep(50_000) }
        }
        guard let callID else {
            Issue.record("the call did not become active")
            return
        }
        usleep(1_000_000)
        let switched = try a.ctl(["profile", String(callID.prefix(6)), "catastrophic"])
        #expect(switched.status == 0 && switched.stdout.contains("catastrophic"), "\(switched.stderr)")
        usleep(500_000)
        let media = (try a.ctlJSON(["calls"])["calls"]?.arrayValue ?? []).first?["media"]
        #expect(media?["profile"]?.stringValue == "catastrophic")
        #expect(media?["bitrate"]?.intValue == 6_000)
        let bad = try a.ctl(["profile", callID, "loud"])
        #expect(bad.status != 0 && bad.stderr.contains("studio, good, normal, degraded, catastrophic"))
        let (result, summary) = try placing.wait()
        #expect(result.status == 0, "call failed: \(result.stderr)")
        // The callee decoded 40 ms packets as they came: nothing lost, and it recorded the whole call.
        #expect((summary?["packetsLost"]?.intValue ?? 99) <= 2)
        let recorded = (try? FileManager.default.contentsOfDirectory(atPath: scratch.file("rec"))) ?? []
        let wav = try recorded.first.map { try WAV.read(path: scratch.file("rec/" + $0)) }
        #expect(Double(wav?.samples.count ?? 0) / 48_000 > 4)
        a.stop()
        b.stop()
    }

    @Test func aCallWithoutInputLastsUntilTheOtherSideHangsUp() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let (a, b) = try echoPair(scratch)
        let (socket, callee) = (a.socket, b.address)
        let placing = Background { try runCommand(Binaries.meshNode, ["call", callee, "--control-socket", socket, "--json"], timeout: 30) }
        var callID: String?
        let deadline = Date().addingTimeInterval(10)
        while callID == nil && Date() < deadline {
            callID = (try b.ctlJSON(["calls"])["calls"]?.arrayValue ?? []).first { $0["state"]?.stringValue == "active" }?["id"]?.stringValue
            if callID == nil { usleep(50_000) }
        }
        usleep(2_000_000)
        #expect(try b.ctl(["hangup", callID ?? "none"]).status == 0)
        let result = try placing.wait()
        #expect(result.status == 0, "\(result.stderr)")
        #expect((try decodeJSON(result.stdout)["durationS"]?.doubleValue ?? 0) > 1.5)
        a.stop()
        b.stop()
    }

    @Test func recordModeWritesOneWAVPerCallAndOffDeclines() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let speech = try speechSample(in: scratch)
        let (a, b) = try echoPair(scratch, calleeMode: "record")
        let (result, _) = try placeCall(from: a, to: b, play: speech, record: scratch.file("reply.wav"))
        #expect(result.status == 0, "call failed: \(result.stderr)")
        let files = (try? FileManager.default.contentsOfDirectory(atPath: scratch.file("rec"))) ?? []
        #expect(files.count == 1)
        if let file = files.first {
            #expect(file.hasSuffix("-\(a.address).wav"))
            let m = try match(speech, scratch.file("rec/" + file))
            #expect((m["correlation"]?.doubleValue ?? 0) > speechMatchFloor, "\(m); \(figures(a, b))")
        }
        a.stop()
        b.stop()

        let declining = Scratch()
        defer { declining.remove() }
        let (c, d) = try echoPair(declining, calleeMode: "off")
        let refused = try runCommand(Binaries.meshNode, ["call", d.address, "--control-socket", c.socket, "--duration", "1"])
        #expect(refused.status == 1)
        #expect(refused.stdout.contains("declined"))
        c.stop()
        d.stop()
    }
}
