#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// libFuzzer's entry points (docs/fuzzing.md). One binary holds every target and runs the one its name says:
// Tools/fuzz links `fuzz-NAME` to it. With MESH_FUZZ_SEEDS=DIR set, it writes the target's seeds into DIR
// and exits instead.

nonisolated(unsafe) private var target: FuzzTarget?

@_cdecl("LLVMFuzzerInitialize")
public func fuzzerInitialize(_ argc: UnsafeMutablePointer<CInt>,
                             _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    let program = argv.pointee?.pointee.map { String(cString: $0) } ?? ""
    let base = program.split(separator: "/").last ?? ""
    guard base.hasPrefix("fuzz-"), let chosen = FuzzTarget.named(String(base.dropFirst("fuzz-".count))) else {
        print("run me as fuzz-TARGET, TARGET one of: \(FuzzTarget.all.map(\.name).joined(separator: " "))")
        exit(2)
    }
    target = chosen
    if let directory = getenv("MESH_FUZZ_SEEDS").map({ String(cString: $0) }) {
        for (index, seed) in chosen.seeds().enumerated() {
            _ = Fuzz.write(seed, to: "\(directory)/seed-\(index)")
        }
        exit(0)
    }
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    target?.run(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
    return 0
}
