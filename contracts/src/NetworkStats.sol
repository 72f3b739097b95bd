// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Ownable} from "./Ownable.sol";
import {INetworkStats} from "./Interfaces.sol";

/// @notice Network counters, kept in one storage slot and written only by the Node and Task contracts.
contract NetworkStats is Ownable, INetworkStats {
    struct Counters {
        uint32 totalNodes; // joined nodes (status != QUIT)
        uint32 availableNodes;
        uint32 busyNodes; // BUSY, PENDING_PAUSE or PENDING_QUIT
        uint64 totalTasks; // tasks ever created
        uint32 queuedTasks;
        uint32 runningTasks; // started and not yet finished (some node still bound to it)
    }

    Counters private c;
    address public nodeContract;
    address public taskContract;

    function setContracts(address node, address task) external onlyOwner {
        if (nodeContract != address(0)) revert AlreadySet();
        if (node == address(0) || task == address(0)) revert ZeroAddress();
        nodeContract = node;
        taskContract = task;
    }

    function updateNodes(int256 dTotal, int256 dAvailable, int256 dBusy) external {
        if (msg.sender != nodeContract) revert Unauthorized();
        Counters memory x = c;
        x.totalNodes = uint32(uint256(int256(uint256(x.totalNodes)) + dTotal));
        x.availableNodes = uint32(uint256(int256(uint256(x.availableNodes)) + dAvailable));
        x.busyNodes = uint32(uint256(int256(uint256(x.busyNodes)) + dBusy));
        c = x;
    }

    function updateTasks(uint256 created, int256 dQueued, int256 dRunning) external {
        if (msg.sender != taskContract) revert Unauthorized();
        Counters memory x = c;
        x.totalTasks += uint64(created);
        x.queuedTasks = uint32(uint256(int256(uint256(x.queuedTasks)) + dQueued));
        x.runningTasks = uint32(uint256(int256(uint256(x.runningTasks)) + dRunning));
        c = x;
    }

    function totalNodes() external view returns (uint256) {
        return c.totalNodes;
    }

    function availableNodes() external view returns (uint256) {
        return c.availableNodes;
    }

    function busyNodes() external view returns (uint256) {
        return c.busyNodes;
    }

    function totalTasks() external view returns (uint256) {
        return c.totalTasks;
    }

    function queuedTasks() external view returns (uint256) {
        return c.queuedTasks;
    }

    function runningTasks() external view returns (uint256) {
        return c.runningTasks;
    }
}
