import ArgumentParser
import Foundation
import MeshControl
import MeshDaemon
import MeshMedia

/// The audio a call sends: a WAV file converted to 48 kHz mono, raw PCM from stdin, or nothing.
final class AudioSource: @unchecked Sendable {
    private var samples: [Int16]
    private var offset = 0
    private let stdin: Bool

    private init(samples: [Int16], stdin: Bool) {
        self.samples = samples
        self.stdin = stdin
    }

    static func open(_ spec: String?) throws -> AudioSource {
        guard let spec else { return AudioSource(samples: [], stdin: false) }
        if spec == "-" { return AudioSource(samples: [], stdin: true) }
        do {
            return AudioSource(samples: try WAV.readMono48k(path: spec), stdin: false)
        } catch {
            throw CLIError("--play \(spec): \(error)")
        }
    }

    /// False when the call sends nothing (no --play).
    var hasInput: Bool { stdin || !samples.isEmpty }

    /// Length of a file input; nil for stdin or no input.
    var lengthSeconds: Double? {
        stdin || samples.isEmpty ? nil : Double(samples.count) / Double(Audio.sampleRate)
    }

    /// The next 20 ms frame, zero-padded at the end; nil when the input is exhausted.
    func nextFrame() -> [Int16]? {
        if stdin {
            let bytes = FileHandle.standardInput.readData(ofLength: Audio.frameSamples * 2)
            guard !bytes.isEmpty else { return nil }
            return pad(PCM.samples(littleEndian: Array(bytes)))
        }
        guard offset < samples.count else { return nil }
        let end = min(offset + Audio.frameSamples, samples.count)
        defer { offset = end }
        return pad(Array(samples[offset..<end]))
    }

    private func pad(_ frame: [Int16]) -> [Int16] {
        frame.count == Audio.frameSamples ? frame : frame + [Int16](repeating: 0, count: Audio.frameSamples - frame.count)
    }
}

/// Where received audio goes: a WAV file, raw PCM on stdout, or nowhere.
final class AudioSink: @unchecked Sendable {
    private let writer: WAVWriter?
    private let stdout: Bool

    private init(writer: WAVWriter?, stdout: Bool) {
        self.writer = writer
        self.stdout = stdout
    }

    static func open(_ spec: String?) throws -> AudioSink {
        guard let spec else { return AudioSink(writer: nil, stdout: false) }
        if spec == "-" { return AudioSink(writer: nil, stdout: true) }
        if FileManager.default.fileExists(atPath: spec) { throw CLIError("--record \(spec): file exists; not overwriting it") }
        do {
            return AudioSink(writer: try WAVWriter(path: spec), stdout: false)
        } catch {
            throw CLIError("--record \(spec): \(error)")
        }
    }

    func write(_ frame: [Int16]) {
        if stdout { FileHandle.standardOutput.write(Data(PCM.littleEndianBytes(frame))) }
        try? writer?.append(frame)
    }

    func close() { try? writer?.close() }
}

/// The state of one placed call as the node's notifications tell it (filled on the client's reader thread).
final class CallSession: @unchecked Sendable {
    private let condition = NSCondition()
    private let sink: AudioSink
    private var established = false
    private var endedParams: JSONValue?
    private var interrupted = false
    private var id: String?
    private var setup: JSONValue?
    /// The calls a transfer moved this client to, in order.
    private var transferredTo: [String] = []

    init(sink: AudioSink) { self.sink = sink }

    var callID: String? {
        get { condition.withLock { id } }
        set { condition.withLock { id = newValue } }
    }
    var isEnded: Bool { condition.withLock { endedParams != nil } }
    var isInterrupted: Bool { condition.withLock { interrupted } }
    var setupMs: JSONValue? { condition.withLock { setup } }
    var transfers: [String] { condition.withLock { transferredTo } }

    func interrupt() {
        condition.withLock {
            interrupted = true
            condition.broadcast()
        }
    }

    func handle(_ message: RPCMessage) {
        let params = message.params ?? .null
        switch message.method {
        case "audio.frame":
            if let pcm = params["pcm"]?.stringValue.flatMap(PCM.samples(base64:)) { sink.write(pcm) }
        case "call.established":
            condition.withLock {
                established = true
                setup = params["setupMs"]
                condition.broadcast()
            }
        case "call.ended":
            condition.withLock {
                // A call this client no longer follows (one a transfer to another wallet failed to place) ends alone.
                guard params["call"]?.stringValue == id || id == nil else { return }
                endedParams = params
                condition.broadcast()
            }
        case "call.transferred":
            // The callee transferred the call: the node placed the new one for this client, and it is answered.
            condition.withLock {
                guard params["call"]?.stringValue == id, let next = params["to"]?.stringValue else { return }
                id = next
                transferredTo.append(next)
            }
            FileHandle.standardError.write(Data("call transferred: now call \(params["to"]?.stringValue ?? "?")\n".utf8))
        case "control.closed":
            condition.withLock {
                if endedParams == nil { endedParams = .object(["reason": .string("the node closed the control connection")]) }
                condition.broadcast()
            }
        default:
            break
        }
    }

    /// True once answered; false when the call ended first, was interrupted, or the timeout passed.
    func waitForAnswer(timeout: TimeInterval) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        return condition.withLock {
            while !established && endedParams == nil && !interrupted {
                if !condition.wait(until: deadline) { break }
            }
            return established && endedParams == nil
        }
    }

    func waitForEnd(timeout: TimeInterval) -> JSONValue? {
        let deadline = Date().addingTimeInterval(timeout)
        return condition.withLock {
            while endedParams == nil {
                if !condition.wait(until: deadline) { break }
            }
            return endedParams
        }
    }
}
