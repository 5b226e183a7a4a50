import Foundation
import Testing

/// The fuzz targets in the normal suite: every input under Fuzz/Regressions/TARGET/ (crashes a fuzzer found,
/// kept after the fix) and every seed goes through its target exactly as the fuzzer runs it, so a decoder that
/// crashes again fails `swift test`. Serialized: the file decoders' targets share one scratch file per process.
@Suite(.serialized) struct FuzzRegressionTests {
    static let regressions = Fuzz.repository.path + "/Fuzz/Regressions"

    @Test func everyRegressionInputRunsThroughItsTarget() throws {
        let manager = FileManager.default
        let directories = try manager.contentsOfDirectory(atPath: Self.regressions).filter { !$0.hasPrefix(".") }.sorted()
        #expect(!directories.isEmpty, "no regression inputs in \(Self.regressions)")
        for directory in directories {
            let target = try #require(FuzzTarget.named(directory), "Fuzz/Regressions/\(directory) names no fuzz target")
            let files = try manager.contentsOfDirectory(atPath: "\(Self.regressions)/\(directory)").sorted()
            #expect(!files.isEmpty, "Fuzz/Regressions/\(directory) is empty")
            for file in files {
                target.run(Fuzz.contents("\(Self.regressions)/\(directory)/\(file)"))
            }
        }
    }

    @Test(arguments: FuzzTarget.all.map(\.name)) func everySeedRunsThroughItsTarget(_ name: String) throws {
        let target = try #require(FuzzTarget.named(name))
        let seeds = target.seeds()
        #expect(!seeds.isEmpty, "\(name) has no seeds")
        for seed in seeds { target.run(seed) }
    }
}
