// swift-tools-version:6.1
import PackageDescription

/// A system-library target for a Debian-packaged C library.
func systemLibrary(_ name: String, pkgConfig: String, apt: [String]) -> Target {
    .systemLibrary(name: name, path: "Sources/CLibs/\(name)", pkgConfig: pkgConfig, providers: [.apt(apt)])
}

let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]
/// The modules on the forwarding path: compiled for cross-module optimisation, the node gets copies of their generic
/// code specialised for its types (LinkManager<Address>, ByteWriter.write<T>) instead of looking generic metadata
/// up and calling protocol witnesses at run time for every packet (docs/performance.md).
let hotPath: [SwiftSetting] = strict + [.unsafeFlags(["-cross-module-optimization"], .when(configuration: .release))]

let package = Package(
    name: "MeshNode",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "mesh-node", targets: ["MeshNodeCLI"]),
        .executable(name: "node-ctl", targets: ["NodeCtl"]),
        .executable(name: "mesh-flood", targets: ["MeshFlood"]),
        .executable(name: "ice-probe", targets: ["ICEProbe"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
    ],
    targets: [
        systemLibrary("COpus", pkgConfig: "opus", apt: ["libopus-dev"]),
        systemLibrary("CNice", pkgConfig: "nice", apt: ["libnice-dev", "libglib2.0-dev"]),
        systemLibrary("CSRTP", pkgConfig: "libsrtp2", apt: ["libsrtp2-dev"]),
        systemLibrary("CSodium", pkgConfig: "libsodium", apt: ["libsodium-dev"]),
        systemLibrary("CSecp256k1", pkgConfig: "libsecp256k1", apt: ["libsecp256k1-dev"]),
        systemLibrary("CSpeexDSP", pkgConfig: "speexdsp", apt: ["libspeexdsp-dev"]),
        systemLibrary("CBotan", pkgConfig: "botan-2", apt: ["libbotan-2-dev"]),

        .target(name: "CMeshIO"),
        .target(name: "MeshWire", swiftSettings: hotPath),
        .target(name: "MeshMetrics", swiftSettings: strict),
        .target(name: "MeshStun", dependencies: ["MeshWire"], swiftSettings: strict),
        .target(name: "MeshICE", dependencies: ["CNice"], swiftSettings: strict),
        .target(name: "MeshTestKit", dependencies: [
            "MeshDHT", "MeshIdentity", "MeshWire", "MeshLink", "MeshRouting", "MeshCall", "MeshNodeCore",
            .product(name: "HeapModule", package: "swift-collections"),
        ], swiftSettings: strict),
        .target(name: "MeshIdentity", dependencies: ["MeshWire", "CSecp256k1", "CBotan", "CSodium"], swiftSettings: strict),
        .target(name: "MeshLink", dependencies: ["MeshWire", "MeshIdentity", "CSodium"], swiftSettings: hotPath),
        .target(name: "MeshDHT", dependencies: [
            "MeshWire", "MeshIdentity", .product(name: "HeapModule", package: "swift-collections"),
        ], swiftSettings: strict),
        .target(name: "MeshRouting", dependencies: ["MeshWire", "MeshIdentity", "MeshDHT", "MeshLink"], swiftSettings: hotPath),
        .target(name: "MeshStore", dependencies: [
            "MeshDHT", "MeshIdentity", .product(name: "GRDB", package: "GRDB.swift"),
        ], swiftSettings: strict),
        .target(name: "MeshMedia", dependencies: ["MeshWire", "COpus", "CSRTP", "CSpeexDSP"], swiftSettings: strict),
        .target(name: "MeshCall", dependencies: ["MeshWire", "MeshIdentity", "MeshLink", "MeshRouting"], swiftSettings: strict),
        .target(name: "MeshNodeCore", dependencies: [
            "MeshWire", "MeshIdentity", "MeshLink", "MeshRouting", "MeshCall", "MeshDHT",
        ], swiftSettings: hotPath),
        .target(name: "MeshControl", dependencies: [
            "MeshWire",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ], swiftSettings: strict),
        .target(name: "MeshDaemon", dependencies: [
            "MeshWire", "MeshIdentity", "MeshLink", "MeshMedia", "MeshCall", "MeshControl", "MeshDHT", "MeshRouting",
            "MeshStore", "MeshMetrics", "MeshStun", "MeshICE", "MeshNodeCore", "CNice", "CMeshIO",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "TOMLKit", package: "TOMLKit"),
        ], swiftSettings: strict),
        .executableTarget(name: "MeshNodeCLI", dependencies: [
            "MeshDaemon", "MeshIdentity", "MeshMedia", "MeshControl",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], swiftSettings: strict),
        .executableTarget(name: "NodeCtl", dependencies: [
            "MeshControl", "MeshMetrics",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], swiftSettings: strict),

        .executableTarget(name: "ICEProbe", dependencies: ["MeshICE"], swiftSettings: strict),
        .executableTarget(name: "DHTBench", dependencies: ["MeshTestKit", "MeshDHT"], swiftSettings: strict),
        .executableTarget(name: "MeshSim", dependencies: ["MeshTestKit", "MeshNodeCore", "MeshCall", "MeshIdentity"], swiftSettings: strict),
        .executableTarget(name: "MeshFlood", dependencies: [
            "MeshDHT", "MeshIdentity", "MeshLink",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], swiftSettings: strict),
        .executableTarget(name: "LinkBench", dependencies: ["MeshLink", "MeshIdentity", "CSodium", "CMeshIO"], swiftSettings: strict),
        .target(name: "CBatchIO"),
        .executableTarget(name: "ForwardLoad", dependencies: [
            "CBatchIO", "MeshLink", "MeshRouting", "MeshIdentity", "MeshWire", "MeshStun",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], swiftSettings: strict),
        .executableTarget(name: "GossipBench", dependencies: ["MeshIdentity", "MeshRouting"], swiftSettings: strict),

        .testTarget(name: "MeshDHTTests", dependencies: ["MeshDHT", "MeshTestKit"], swiftSettings: strict),
        .testTarget(name: "MeshRoutingTests", dependencies: ["MeshRouting", "MeshCall", "MeshLink", "MeshNodeCore", "MeshTestKit", "MeshIdentity"], swiftSettings: strict),
        .testTarget(name: "MeshStunTests", dependencies: ["MeshStun"], swiftSettings: strict),
        .testTarget(name: "MeshICETests", dependencies: ["MeshICE"], swiftSettings: strict),
        .testTarget(name: "MeshStoreTests", dependencies: ["MeshStore"], swiftSettings: strict),
        .testTarget(name: "MeshIdentityTests", dependencies: ["MeshIdentity"], swiftSettings: strict),
        .testTarget(name: "MeshLinkTests", dependencies: ["MeshLink", "MeshTestKit", "MeshWire"], swiftSettings: strict),
        .testTarget(name: "MeshMediaTests", dependencies: ["MeshMedia", "MeshTestKit"], swiftSettings: strict),
        .testTarget(name: "MeshCallTests", dependencies: ["MeshCall", "MeshTestKit"], swiftSettings: strict),
        .testTarget(name: "MeshDaemonTests", dependencies: [
            "MeshDaemon", "MeshControl", "MeshLink", "MeshMetrics", .product(name: "NIOCore", package: "swift-nio"),
        ], swiftSettings: strict),
        // The libFuzzer targets (docs/fuzzing.md; Tools/fuzz builds them): as tests, their seeds and crash regressions.
        .testTarget(name: "FuzzTests", dependencies: [
            "MeshDaemon", "MeshLink", "MeshDHT", "MeshRouting", "MeshCall", "MeshMedia", "MeshControl", "MeshIdentity", "MeshStun",
        ], path: "Fuzz", exclude: ["Driver", "Regressions", "lsan-suppressions.txt"], swiftSettings: strict),
        .testTarget(name: "MeshFloodTests", dependencies: ["MeshFlood", "MeshDHT", "MeshIdentity", "MeshLink"], swiftSettings: strict),
        .testTarget(name: "IntegrationTests", dependencies: ["MeshNodeCLI", "NodeCtl", "ForwardLoad", "ICEProbe", "MeshDaemon", "MeshLink", "MeshRouting", "MeshTestKit", "MeshMetrics"], swiftSettings: strict),
    ]
)
