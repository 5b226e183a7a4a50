import Foundation
import MeshControl
import Testing

/// Paths of the built executables: `$MESH_BIN_DIR`, else the folder the test bundle runs from.
enum Binaries {
    static let directory: String = {
        if let dir = ProcessInfo.processInfo.environment["MESH_BIN_DIR"] { return dir }
        var candidates = [URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path]
        candidates += [Bundle.main.bundleURL.deletingLastPathComponent().path, Bundle.main.bundlePath]
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        candidates.append(root.appendingPathComponent(".build/debug").path)
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0 + "/mesh-node") } ?? candidates.last!
    }()
    static var meshNode: String { directory + "/mesh-node" }
    static var nodeCtl: String { directory + "/node-ctl" }
}

/// A scratch folder under /tmp (short, so Unix socket paths fit), removed by `remove()` unless `MESH_KEEP_SCRATCH`
/// is set (then the nodes' logs stay for a post-mortem). `remove()` first stops every node started in it that is
/// still running: a test that throws before its own `defer` stops its nodes (one did not come up) leaks none.
final class Scratch: @unchecked Sendable {
    let path: String
    private let lock = NSLock()
    private var nodes: [Process] = []

    init() {
        path = "/tmp/mn-" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func file(_ name: String) -> String { path + "/" + name }

    /// A node process started with its data in this folder.
    func started(_ node: Process) { lock.withLock { nodes.append(node) } }

    func remove() {
        for node in lock.withLock({ nodes }) where node.isRunning { terminate(node) }
        guard ProcessInfo.processInfo.environment["MESH_KEEP_SCRATCH"] == nil else { return }
        try? FileManager.default.removeItem(atPath: path)
    }
}

struct Finished {
    var status: Int32
    var stdout: String
    var stderr: String
    /// The command outlived its timeout and was stopped.
    var timedOut = false
}

/// Runs a command to completion. After `timeout` seconds it gets SIGINT, and SIGKILL `stopGrace` seconds later;
/// the timeout is recorded as a test issue unless the caller reports it itself (`recordTimeout: false`).
@discardableResult
func runCommand(_ executable: String, _ arguments: [String], timeout: TimeInterval = 60, stopGrace: TimeInterval = 0.5,
                recordTimeout: Bool = true) throws -> Finished {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let outData = ReadAll(out.fileHandleForReading)
    let errData = ReadAll(err.fileHandleForReading)
    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning && Date() < deadline { usleep(20_000) }
    let timedOut = process.isRunning
    if timedOut {
        process.interrupt()
        let grace = Date().addingTimeInterval(stopGrace)
        while process.isRunning && Date() < grace { usleep(20_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        if recordTimeout { Issue.record("\(executable) \(arguments.joined(separator: " ")) timed out after \(timeout) s") }
    }
    process.waitUntilExit()
    return Finished(status: process.terminationStatus, stdout: outData.text(), stderr: errData.text(), timedOut: timedOut)
}

/// Drains a pipe on a background thread so a chatty child never blocks.
final class ReadAll: @unchecked Sendable {
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)
    init(_ handle: FileHandle) {
        Thread {
            self.data = handle.readDataToEndOfFile()
            self.done.signal()
        }.start()
    }
    func text() -> String {
        done.wait()
        return String(decoding: data, as: UTF8.self)
    }
}

/// One `mesh-node run` process with its own data dir and control socket, on a loopback port the OS picks.
final class NodeProcess {
    let name: String
    let scratch: Scratch
    let socket: String
    let process = Process()
    let log: String
    private(set) var address = ""
    private(set) var endpoint = ""

    /// `namespace`: run inside that network namespace (`ip netns exec`); the control socket is a file, so
    /// `node-ctl` reaches it from outside. `waitUntilUp: false` returns as soon as the process started (call
    /// `waitUntilUp()` later), so many nodes can start at once. `environment` is added to the test's own, and the
    /// node started through env(1): with libfaketime preloaded (ClockStepTests), a node spawned straight from this
    /// process, which has not loaded it, saw no arguments.
    init(_ name: String, in scratch: Scratch, arguments: [String], namespace: NetworkNamespace? = nil,
         listen: String = "127.0.0.1:0", waitUntilUp: Bool = true, environment: [String: String] = [:]) throws {
        self.name = name
        self.scratch = scratch
        socket = scratch.file("\(name).sock")
        log = scratch.file("\(name).log")
        FileManager.default.createFile(atPath: log, contents: nil)
        let run = ["run", "--listen", listen, "--data-dir", scratch.file(name), "--control-socket", socket] + arguments
        if let namespace {
            process.executableURL = URL(fileURLWithPath: NetworkNamespace.ip)
            process.arguments = ["netns", "exec", namespace.name, Binaries.meshNode] + run
        } else if !environment.isEmpty {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = [Binaries.meshNode] + run
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        } else {
            process.executableURL = URL(fileURLWithPath: Binaries.meshNode)
            process.arguments = run
        }
        process.standardError = FileHandle(forWritingAtPath: log)
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        scratch.started(process)
        if waitUntilUp { try self.waitUntilUp() }
    }

    /// Waits up to 20 s for the node to answer `info`; stops it and throws when it does not.
    func waitUntilUp() throws {
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if let info = try? ctl(["info", "--json"]), info.status == 0,
               let json = try? JSONDecoder().decode(JSONValue.self, from: Data(info.stdout.utf8)) {
                address = json["node"]?.stringValue ?? ""
                endpoint = json["listen"]?.stringValue ?? ""
                return
            }
            guard process.isRunning else { break }
            usleep(100_000)
        }
        stop()
        throw HarnessError("node \(name) did not come up: \(logText())")
    }

    var port: UInt16 { UInt16(endpoint.split(separator: ":").last ?? "") ?? 0 }

    func ctl(_ arguments: [String]) throws -> Finished {
        try runCommand(Binaries.nodeCtl, ["--control-socket", socket] + arguments, timeout: 15)
    }

    func ctlJSON(_ arguments: [String]) throws -> JSONValue {
        let result = try ctl(arguments + ["--json"])
        guard result.status == 0 else { throw HarnessError("node-ctl \(arguments) failed: \(result.stderr)") }
        return try JSONDecoder().decode(JSONValue.self, from: Data(result.stdout.utf8))
    }

    /// Waits until `condition` holds for this node's info (polling, with a timeout).
    func wait(for what: String, timeout: TimeInterval = 15, _ condition: (JSONValue) -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let info = try? ctlJSON(["info"]), condition(info) { return }
            usleep(100_000)
        }
        throw HarnessError("\(name): timed out waiting for \(what)")
    }

    func logText() -> String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

    /// SIGTERM, then SIGKILL after 5 s. Returns the exit status.
    @discardableResult
    func stop() -> Int32 { terminate(process) }
}

/// Stops a child: SIGTERM, then SIGKILL after 5 s. Returns its exit status.
@discardableResult
func terminate(_ process: Process) -> Int32 {
    if process.isRunning {
        process.terminate()
        let deadline = Date().addingTimeInterval(5)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
    process.waitUntilExit()
    return process.terminationStatus
}

/// A network namespace of the test's own with loopback up, for impairing traffic with nftables rules without
/// touching the host; `remove()` deletes it (and its rules).
struct NetworkNamespace {
    static let ip = "/usr/sbin/ip"
    static let nft = "/usr/sbin/nft"
    let name: String

    init() throws {
        name = "mn-" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        for arguments in [["netns", "add", name], ["netns", "exec", name, Self.ip, "link", "set", "lo", "up"]] {
            let result = try runCommand(Self.ip, arguments)
            guard result.status == 0 else {
                remove()
                throw HarnessError("ip \(arguments.joined(separator: " ")) failed (needs root and iproute2): \(result.stderr)")
            }
        }
    }

    /// Runs `nft` with these arguments inside the namespace.
    func nft(_ arguments: [String]) throws {
        let result = try runCommand(Self.ip, ["netns", "exec", name, Self.nft] + arguments)
        guard result.status == 0 else { throw HarnessError("nft \(arguments.joined(separator: " ")) failed: \(result.stderr)") }
    }

    func remove() {
        _ = try? runCommand(Self.ip, ["netns", "del", name])
    }
}

struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// A speech sample from espeak-ng (installed by Tools/setup), 22.05 kHz mono: the call must resample it.
func speechSample(in scratch: Scratch, text: String = "Hello from the mesh. This is a test call between two wallets, one two three four five six.") throws -> String {
    let path = scratch.file("speech.wav")
    let result = try runCommand("/usr/bin/espeak-ng", ["-w", path, text])
    guard result.status == 0 else { throw HarnessError("espeak-ng failed: \(result.stderr)") }
    return path
}

/// What a process test asks of returned speech (`mesh-node audio-match`): that the media arrived and decodes as the
/// speech sent, not its quality (Tools/bench-call holds the 0.7 quality bar). On a loaded machine the feeder of a
/// call (`mesh-node call`, its own process) stalls; the node's feed sends silence for the stall and sheds the
/// catch-up at the next pause (docs/media.md, "Client feed"), so the echo's delay steps by the stall. Measured with
/// two `yes` loads on the shared 2-core machine while audio-match searched each block only ±30 ms around the overall
/// lag (now ±120 ms): a 60 ms step that 3 feed frames dropped at a pause undid, no loss and no late loss, match
/// 0.46–0.62 (0.80–0.82 unloaded).
/// Unrelated speech matches at about 0.1–0.27, noise 0.01, silence 0.
let speechMatchFloor = 0.4

/// The correlation of `recorded` with `reference` (`mesh-node audio-match`).
func speechMatch(_ reference: String, _ recorded: String) throws -> JSONValue {
    let result = try runCommand(Binaries.meshNode, ["audio-match", "--reference", reference, "--recorded", recorded, "--json"])
    guard result.status == 0 else { throw HarnessError("audio-match failed: \(result.stderr)") }
    return try decodeJSON(result.stdout)
}

/// A call's media figures that explain a match (loss, late loss, concealment, stretching, delay, feed drops).
func mediaFigures(_ media: JSONValue?) -> String {
    ["packetsLost", "packetsLate", "concealmentPercent", "timeStretchPercent", "p95PlayoutDelayMs", "jitterMs",
     "feedFramesDropped"].map { "\($0) \(media?[$0]?.doubleValue.map { String(format: "%.1f", $0) } ?? "-")" }
        .joined(separator: ", ")
}

func decodeJSON(_ text: String) throws -> JSONValue {
    try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
}

/// Runs a throwing closure on its own thread; `wait()` returns its result.
final class Background<T>: @unchecked Sendable {
    private var result: Result<T, Error>?
    private let done = DispatchSemaphore(value: 0)

    init(_ work: @escaping @Sendable () throws -> T) {
        Thread {
            self.result = Result { try work() }
            self.done.signal()
        }.start()
    }

    func wait() throws -> T {
        done.wait()
        return try result!.get()
    }
}

/// The local port an IPv4 UDP socket is bound to.
func boundPort(_ fd: Int32) -> UInt16 {
    var addr = sockaddr_in()
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
    return UInt16(bigEndian: addr.sin_port)
}
