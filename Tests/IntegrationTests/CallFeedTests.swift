import Foundation
import MeshControl
import Testing

/// The client feed between a real `mesh-node call --play` process and its node (docs/media.md, "Client feed").
@Suite struct CallFeedTests {
    /// The call process is stopped twice for 60 ms (SIGSTOP/SIGCONT) while it plays speech. The node's grid
    /// goes on without it and the process then catches up with a burst; the node sheds that surplus during the
    /// call (at a pause, or by the catch-up) instead of keeping it queued to the end.
    @Test func aStalledCallerIsCaughtUpDuringTheCall() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let speech = try speechSample(in: scratch, text: """
            Hello from the mesh. This is a test call between two wallets. The caller stops for a moment, twice, \
            and then goes on talking. One, two, three, four, five, six, seven, eight, nine, ten. The end.
            """)
        let b = try NodeProcess("b", in: scratch, arguments: ["--auto-answer", "record", "--record-dir", scratch.file("rec")])
        defer { b.stop() }
        let a = try NodeProcess("a", in: scratch, arguments: ["--peer", "\(b.address)@127.0.0.1:\(b.port)"])
        defer { a.stop() }
        try a.wait(for: "link to b") { $0["peersUp"]?.intValue == 1 }

        let call = Process()
        call.executableURL = URL(fileURLWithPath: Binaries.meshNode)
        call.arguments = ["call", b.address, "--control-socket", a.socket, "--play", speech, "--json"]
        call.standardOutput = FileHandle.nullDevice
        call.standardError = FileHandle.nullDevice
        call.standardInput = FileHandle.nullDevice
        try call.run()
        defer {
            if call.isRunning { call.terminate() }
            call.waitUntilExit()
        }
        try a.wait(for: "the call to be answered", timeout: 20) { _ in
            (try? a.ctlJSON(["calls"]))?["calls"]?.arrayValue?.first?["state"]?.stringValue == "active"
        }
        for _ in 0..<2 {
            sleep(1)
            kill(call.processIdentifier, SIGSTOP)
            usleep(60_000)
            kill(call.processIdentifier, SIGCONT)
        }
        let deadline = Date().addingTimeInterval(40)
        while call.isRunning && Date() < deadline { usleep(100_000) }
        #expect(!call.isRunning, "the call did not end")
        let media = try a.ctlJSON(["calls"])["calls"]?.arrayValue?.first?["media"]
        #expect((media?["feedFramesDropped"]?.intValue ?? 0) >= 1, "\(String(describing: media))")
    }
}
