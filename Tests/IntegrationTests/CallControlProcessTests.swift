import Foundation
import MeshControl
import MeshMedia
import Testing

/// Call control through real processes over a chain (docs/calls.md, "Call control"): a → b → c, with d and e also
/// behind the relay b.
@Suite(.serialized) struct CallControlProcessTests {
    private struct Mesh {
        let scratch: Scratch
        let a, b, c: NodeProcess
        let nodes: [NodeProcess]

        init(more: [(String, [String])] = []) throws {
            let scratch = Scratch()
            let c = try NodeProcess("c", in: scratch, arguments: ["--auto-answer", "echo"])
            let extra = try more.map { try NodeProcess($0.0, in: scratch, arguments: $0.1) }
            let b = try NodeProcess("b", in: scratch, arguments: ([c] + extra).flatMap { ["--peer", ChainTests.peer($0)] })
            let a = try NodeProcess("a", in: scratch, arguments: ["--peer", ChainTests.peer(b)])
            (self.scratch, self.a, self.b, self.c, nodes) = (scratch, a, b, c, [a, b, c] + extra)
            do {
                try ChainTests.links(b, 2 + extra.count)
            } catch {
                stop()
                throw error
            }
        }

        func stop() {
            nodes.forEach { $0.stop() }
            scratch.remove()
        }
    }

    /// The call with `id` as `node` lists it.
    private static func call(_ id: String, at node: NodeProcess) throws -> JSONValue {
        try node.ctlJSON(["calls"])["calls"]?.arrayValue?.first { $0["id"]?.stringValue == id } ?? .null
    }

    private static func control(_ id: String, at node: NodeProcess) throws -> JSONValue { try call(id, at: node)["control"] ?? .null }

    private static func packets(_ id: String, at node: NodeProcess) throws -> (sent: Int, received: Int) {
        let media = try call(id, at: node)["media"]
        return (media?["packetsSent"]?.intValue ?? -1, media?["packetsReceived"]?.intValue ?? -1)
    }

    /// Polls `condition` every 100 ms for up to `seconds`.
    private static func eventually(_ seconds: TimeInterval, _ condition: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try condition() { return true }
            usleep(100_000)
        }
        return try condition()
    }

    /// Held for longer than the media timeout (10 s): no media either way, comfort noise at the caller, the call
    /// survives; resumed, media flows again; muted, this side sends silence without telling the other.
    @Test func aHeldCallCarriesNoMediaOutlivesTheMediaTimeoutAndResumes() throws {
        let mesh = try Mesh()
        defer { mesh.stop() }
        let speech = try speechSample(in: mesh.scratch)
        let (socket, callee, reply) = (mesh.a.socket, mesh.c.address, mesh.scratch.file("reply.wav"))
        let placing = Background { try ChainTests.call(socket: socket, callee, duration: 40, play: speech, record: reply) }
        let id = try ChainTests.activeCall(at: mesh.c, within: 20)
        usleep(1_000_000)

        let held = try mesh.c.ctlJSON(["hold", id])
        #expect(held["hold"]?.stringValue == "local")
        #expect(try Self.eventually(3) { try Self.control(id, at: mesh.a)["hold"]?.stringValue == "remote" })
        // Where the caller's recording is (it has one 20 ms frame per tick since the answer) once it knows it is held.
        let heldFrame = Int((try Self.call(id, at: mesh.a)["durationS"]?.doubleValue ?? 0) * 50)
        usleep(500_000)
        let (a0, c0) = (try Self.packets(id, at: mesh.a), try Self.packets(id, at: mesh.c))
        usleep(11_000_000)
        let (a1, c1) = (try Self.packets(id, at: mesh.a), try Self.packets(id, at: mesh.c))
        #expect(a1.sent == a0.sent && c1.sent == c0.sent, "media sent while held: a \(a1.sent - a0.sent), c \(c1.sent - c0.sent)")
        #expect(a1.received == a0.received && c1.received == c0.received)
        #expect(try Self.call(id, at: mesh.a)["state"]?.stringValue == "active", "the held call outlived the 10 s media timeout")
        #expect(try Self.call(id, at: mesh.c)["state"]?.stringValue == "active")

        let resumedFrame = Int((try Self.call(id, at: mesh.a)["durationS"]?.doubleValue ?? 0) * 50)
        _ = try mesh.c.ctlJSON(["resume", id])
        #expect(try Self.eventually(3) {
            try Self.control(id, at: mesh.a)["hold"]?.stringValue == "none" && Self.packets(id, at: mesh.a).received > a1.received + 20
        }, "media flows again")

        let muted = try mesh.a.ctlJSON(["mute", id])
        #expect(muted["muted"]?.boolValue == true)
        #expect(try Self.control(id, at: mesh.c)["hold"]?.stringValue == "none", "mute is not signalled")
        _ = try mesh.a.ctlJSON(["unmute", id])
        _ = try mesh.a.ctl(["hangup", id])
        let (result, summary) = try placing.wait()
        #expect(result.status == 0, "\(result.stderr)")
        #expect(summary?["reason"]?.stringValue == "hangup")

        // What the caller heard while held (the recording's frames from when it knew, to the resume): comfort noise
        // at about -60 dBFS all through, never digital silence (a dead line) nor the echo.
        let samples = try WAV.read(path: reply).samples
        let frames = stride(from: 0, to: samples.count - Audio.frameSamples, by: Audio.frameSamples).map { start in
            (samples[start..<start + Audio.frameSamples].reduce(0.0) { $0 + Double($1) * Double($1) } / Double(Audio.frameSamples)).squareRoot()
        }
        let hold = frames[min(heldFrame + 5, frames.count)..<min(resumedFrame, frames.count)]
        #expect(hold.count >= 500, "\(hold.count) frames held (\(heldFrame)–\(resumedFrame) of \(frames.count))")
        #expect(hold.allSatisfy { $0 > 10 && $0 < 100 }, "held frames between \(hold.min() ?? -1) and \(hold.max() ?? -1) RMS")
    }

    /// A relay quelches the caller: the caller's node is told (signed by the relay) and stops sending, the callee
    /// gets nothing of it; unquelched, it flows again. Then the callee's node quelches it itself.
    @Test func aRelayOrTheCalleesNodeQuelchesTheCaller() throws {
        let mesh = try Mesh()
        defer { mesh.stop() }
        let speech = try speechSample(in: mesh.scratch)
        let (socket, callee) = (mesh.a.socket, mesh.c.address)
        let placing = Background { try ChainTests.call(socket: socket, callee, duration: 40, play: speech, record: nil) }
        let id = try ChainTests.activeCall(at: mesh.c, within: 20)

        let atRelay = try mesh.b.ctlJSON(["quelch", String(id.prefix(8))])
        #expect(atRelay["role"]?.stringValue == "relay" && atRelay["quelched"]?.boolValue == true)
        #expect(try mesh.b.ctlJSON(["sessions"])["sessions"]?.arrayValue?.first?["quelched"]?.boolValue == true)
        #expect(try Self.eventually(3) {
            try Self.control(id, at: mesh.a)["quelchedBy"]?.arrayValue?.compactMap(\.stringValue) == [mesh.b.address]
        })
        #expect(try Self.control(id, at: mesh.c)["quelchedBy"]?.arrayValue?.compactMap(\.stringValue) == [mesh.b.address])
        usleep(500_000)
        let (a0, c0) = (try Self.packets(id, at: mesh.a), try Self.packets(id, at: mesh.c))
        usleep(2_000_000)
        let (a1, c1) = (try Self.packets(id, at: mesh.a), try Self.packets(id, at: mesh.c))
        #expect(a1.sent == a0.sent && c1.received == c0.received, "the caller's media stopped")
        #expect(c1.sent > c0.sent, "the callee's media still flows")

        _ = try mesh.b.ctlJSON(["unquelch", id])
        #expect(try Self.eventually(3) {
            try Self.control(id, at: mesh.a)["quelchedBy"]?.arrayValue?.isEmpty == true && Self.packets(id, at: mesh.c).received > c1.received + 20
        })

        let atCallee = try mesh.c.ctlJSON(["quelch", id])
        #expect(atCallee["quelchedHere"]?.boolValue == true)
        #expect(try Self.eventually(3) {
            try Self.control(id, at: mesh.a)["quelchedBy"]?.arrayValue?.compactMap(\.stringValue) == [mesh.c.address]
        })
        let refused = try mesh.a.ctl(["quelch", id])
        #expect(refused.status != 0 && refused.stderr.contains("mute"), "the caller's node cannot quelch: \(refused.stderr)")
        _ = try mesh.c.ctlJSON(["unquelch", id])
        #expect(try Self.eventually(3) { try Self.control(id, at: mesh.a)["quelchedBy"]?.arrayValue?.isEmpty == true })
        _ = try mesh.a.ctl(["hangup", id])
        #expect(try placing.wait().0.status == 0)
    }

    /// The callee transfers the caller to d: the caller's node calls d for the same client, and the first call ends
    /// as transferred once d answers. A transfer to a wallet that declines leaves the call on hold, and the callee's
    /// node says why.
    @Test func blindTransferMovesTheCallerAndAFailedOneLeavesTheCallOnHold() throws {
        let mesh = try Mesh(more: [("d", ["--auto-answer", "echo"]), ("e", ["--auto-answer", "off"])])
        defer { mesh.stop() }
        let (d, e) = (mesh.nodes[3], mesh.nodes[4])
        let speech = try speechSample(in: mesh.scratch)
        let (socket, callee, reply) = (mesh.a.socket, mesh.c.address, mesh.scratch.file("reply.wav"))

        let placing = Background { try ChainTests.call(socket: socket, callee, duration: 8, play: speech, record: reply) }
        let id = try ChainTests.activeCall(at: mesh.c, within: 20)
        let asked = try mesh.c.ctlJSON(["transfer", id, d.address])
        #expect(asked["transfer"]?["state"]?.stringValue == "asked")
        let (result, summary) = try placing.wait()
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("call transferred"))
        #expect(summary?["endedWith"]?.stringValue == d.address)
        let next = summary?["transferredTo"]?.arrayValue?.first?.stringValue ?? "?"
        #expect(try Self.call(id, at: mesh.c)["endReason"]?.stringValue == "transferred")
        #expect(try Self.call(next, at: d)["remote"]?.stringValue == mesh.a.address, "d had the call from a")
        #expect((try Self.call(next, at: mesh.a)["media"]?["packetsReceived"]?.intValue ?? 0) > 50, "d's echo came back")
        #expect(try speechMatch(speech, reply)["correlation"]?.doubleValue ?? 0 > speechMatchFloor, "the caller heard its speech back")

        let held = Background { try ChainTests.call(socket: socket, callee, duration: 40, play: speech, record: nil) }
        let second = try ChainTests.activeCall(at: mesh.c, within: 20)
        _ = try mesh.c.ctlJSON(["transfer", second, e.address])
        #expect(try Self.eventually(10) { try Self.control(second, at: mesh.c)["transfer"]?["state"]?.stringValue == "failed" })
        let failed = try Self.control(second, at: mesh.c)
        #expect(failed["transfer"]?["reason"]?.stringValue == "declined")
        #expect(failed["hold"]?.stringValue == "remote", "the call waits on hold: \(failed)")
        #expect(try Self.call(second, at: mesh.a)["state"]?.stringValue == "active")
        _ = try mesh.a.ctlJSON(["resume", second])
        #expect(try Self.eventually(3) { try Self.control(second, at: mesh.c)["hold"]?.stringValue == "none" })
        _ = try mesh.c.ctl(["hangup", second])
        #expect(try held.wait().1?["reason"]?.stringValue == "hangup")
    }
}
