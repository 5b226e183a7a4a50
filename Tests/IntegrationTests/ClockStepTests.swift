import Foundation
import MeshControl
import Testing

/// The wall clock steps mid-call (an NTP step, an operator's `date -s`): timers, RTTs and playout run on the node's
/// monotonic clock (docs/architecture.md, "Clocks"), so links, the chain and the audio carry on. libfaketime (Debian's
/// `faketime`, installed by Tools/setup) moves one process's wall clock and leaves its monotonic clock alone.
@Suite(.serialized) struct ClockStepTests {
    static let library = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"

    /// The environment that gives a process the wall clock "real time plus the offset in `file`" ("+0", "+40",
    /// "-40": seconds), read again on every clock reading.
    static func environment(_ file: String) -> [String: String] {
        ["LD_PRELOAD": library, "FAKETIME_TIMESTAMP_FILE": file, "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"]
    }

    /// The steps a node logged ("wall clock stepped", `by-ms`).
    static func steps(_ node: NodeProcess) -> [Int] {
        node.logText().split(separator: "\n").filter { $0.contains("wall clock stepped") }.compactMap { line in
            line.split(separator: " ").first { $0.hasPrefix("by-ms=") }.flatMap { Int($0.dropFirst(6).replacingOccurrences(of: "+", with: "")) }
        }
    }

    @Test func aWallClockStepMidCallMovesNoTimer() throws {
        try #require(FileManager.default.fileExists(atPath: Self.library), "libfaketime is missing: run Tools/setup")
        let scratch = Scratch()
        defer { scratch.remove() }
        let speech = try speechSample(in: scratch)
        let (relayClock, callerClock) = (scratch.file("b.faketime"), scratch.file("a.faketime"))
        for file in [relayClock, callerClock] { try "+0\n".write(toFile: file, atomically: true, encoding: .utf8) }
        let c = try NodeProcess("c", in: scratch, arguments: ["--auto-answer", "echo"])
        let b = try NodeProcess("b", in: scratch, arguments: ["--peer", ChainTests.peer(c)], environment: Self.environment(relayClock))
        let a = try NodeProcess("a", in: scratch, arguments: ["--peer", ChainTests.peer(b), "--allow-link", b.address],
                                environment: Self.environment(callerClock))
        defer { [a, b, c].forEach { $0.stop() } }
        try ChainTests.links(b, 2)

        let (socket, callee, reply) = (a.socket, c.address, scratch.file("reply.wav"))
        let call = Background { try ChainTests.call(socket: socket, callee, duration: 8, play: speech, record: reply) }
        _ = try ChainTests.activeCall(at: c, within: 20)
        usleep(1_500_000)
        // The relay's wall clock jumps 40 s ahead (with wall-clock timers its links would look silent for 40 s,
        // past the 10 s after which a link is down); the caller's 40 s back (its playout deadlines would move).
        try "+40\n".write(toFile: relayClock, atomically: true, encoding: .utf8)
        try "-40\n".write(toFile: callerClock, atomically: true, encoding: .utf8)
        let (result, summary) = try call.wait()

        #expect(result.status == 0, "\(result.stderr)")
        #expect(summary?["reason"]?.stringValue == "hangup", "\(result.stdout)")
        #expect(ChainTests.chain(summary) == [b.address, c.address])
        #expect(summary?["chainSwitches"]?.arrayValue?.isEmpty ?? true, "\(summary?["chainSwitches"]?.prettyText() ?? "")")
        let correlation = try speechMatch(speech, reply)["correlation"]?.doubleValue ?? 0
        #expect(correlation > speechMatchFloor, "the caller heard its speech back: match \(correlation)")
        // Both steps were seen (and logged), and no link went down.
        #expect(Self.steps(b).contains { (39_000...41_000).contains($0) }, "\(b.logText())")
        #expect(Self.steps(a).contains { (-41_000 ... -39_000).contains($0) }, "\(a.logText())")
        for node in [a, b, c] { #expect(!node.logText().contains("link down"), "\(node.name): \(node.logText())") }
    }
}
