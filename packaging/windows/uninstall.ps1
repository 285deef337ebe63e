<#
.SYNOPSIS
  Stop and remove the guestd service (run as Administrator).

.DESCRIPTION
  Stops the service (guestd finishes the request in flight), deletes it and removes
  "$env:ProgramFiles\guestd". The configuration and log in "$env:ProgramData\guestd" are kept
  unless -Purge is given.
#>
param(
    [string]$Name = 'guestd',
    [switch]$Purge
)
$ErrorActionPreference = 'Stop'

$svc = Get-Service -Name $Name -ErrorAction SilentlyContinue
if ($svc) {
    if ($svc.Status -ne 'Stopped') {
        Stop-Service -Name $Name -Force
        $svc.WaitForStatus('Stopped', (New-TimeSpan -Seconds 60))
    }
    & sc.exe delete $Name | Out-Null
    if ($LASTEXITCODE -ne 0) { throw "sc.exe delete $Name failed ($LASTEXITCODE)" }
}
Remove-Item -Recurse -Force -ErrorAction SilentlyContinue (Join-Path $env:ProgramFiles 'guestd')
if ($Purge) {
    Remove-Item -Recurse -Force -ErrorAction SilentlyContinue (Join-Path $env:ProgramData 'guestd')
}
Write-Host "guestd removed$(if (-not $Purge) { ' (configuration and log kept in ' + (Join-Path $env:ProgramData 'guestd') + ')' })"
